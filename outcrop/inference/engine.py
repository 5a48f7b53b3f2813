"""The engine: models loaded on first use, one scheduler each, unloaded least-recently-used.

The engine knows files and tokens only. Callers name a model by the path of its weights (a folder
or a GGUF file) and its kind; several names for one path share one loaded copy.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from outcrop.inference.loader import CAUSAL, LoadedModel, load_causal_lm, load_encoder
from outcrop.inference.scheduler import Scheduler

log = logging.getLogger(__name__)


@dataclass
class Deployment:
    """A loaded model and, for causal models, the scheduler that batches its requests."""

    loaded: LoadedModel
    scheduler: Scheduler | None
    #: Serializes encoder calls; generation goes through the scheduler instead.
    lock: threading.Lock

    @property
    def busy(self) -> bool:
        return self.lock.locked() or (self.scheduler is not None and self.scheduler.active > 0)

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()


class Engine:
    def __init__(self, cache_dir: Path, memory_budget_bytes: int, max_batch: int = 16) -> None:
        self.cache_dir = cache_dir
        self.memory_budget_bytes = memory_budget_bytes
        self.max_batch = max_batch
        self._deployments: OrderedDict[tuple[str, str], Deployment] = OrderedDict()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, path: Path, kind: str = CAUSAL, base: Path | None = None) -> Deployment:
        """The deployment for these weights, loading them (once, even when asked concurrently).

        `base` is the base model's folder when `path` is a LoRA adapter."""
        key = (str(path), kind)
        with self._lock:
            if key in self._deployments:
                self._deployments.move_to_end(key)
                return self._deployments[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._deployments:
                    return self._deployments[key]
            loaded = load_causal_lm(path, self.cache_dir, base=base) if kind == CAUSAL else load_encoder(path)
            log.info("loaded %s (%s, %.0f MB on %s)", path, kind, loaded.nbytes / 2**20, loaded.device)
            deployment = Deployment(loaded, Scheduler(loaded, self.max_batch) if kind == CAUSAL else None,
                                    threading.Lock())
            with self._lock:
                self._deployments[key] = deployment
                self._loading.pop(key, None)
                self._evict(keep=key)
            return deployment

    def unload(self, path: Path) -> None:
        """Drop every deployment of these weights (a deleted provisioned throughput's model)."""
        with self._lock:
            gone = [key for key in self._deployments if key[0] == str(path)]
            for key in gone:
                self._deployments.pop(key).close()
        if gone:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def loaded(self) -> list[tuple[str, str, int]]:
        """(path, kind, bytes) of every loaded model, least recently used first."""
        with self._lock:
            return [(k[0], k[1], d.loaded.nbytes) for k, d in self._deployments.items()]

    def _evict(self, keep: tuple[str, str]) -> None:
        """Unload idle models, oldest first, until the loaded ones fit the memory budget."""
        total = sum(d.loaded.nbytes for d in self._deployments.values())
        evicted = False
        for key in list(self._deployments):
            if total <= self.memory_budget_bytes:
                break
            deployment = self._deployments[key]
            if key == keep or deployment.busy:
                continue
            log.info("unloading %s to stay within the memory budget", key[0])
            del self._deployments[key]
            deployment.close()
            total -= deployment.loaded.nbytes
            evicted = True
        if not evicted:
            return
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def close(self) -> None:
        with self._lock:
            for deployment in self._deployments.values():
                deployment.close()
            self._deployments.clear()
