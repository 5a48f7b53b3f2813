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

from outcrop.inference.loader import (
    CAUSAL,
    ENCODER,
    LORA_HOST,
    LoadedModel,
    load_causal_lm,
    load_encoder,
    load_lora_host,
)
from outcrop.inference.sampling import SamplingParams
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


class AdapterScheduler:
    """A LoRA adapter's view of its host's scheduler: the same batch, its own adapter per row."""

    def __init__(self, host: Scheduler, adapter: str) -> None:
        self.host = host
        self.adapter = adapter

    def submit(self, prompt_ids: list[int], params: SamplingParams, cancelled: threading.Event | None = None):
        return self.host.submit(prompt_ids, params, adapter=self.adapter, cancelled=cancelled)

    @property
    def active(self) -> int:
        return self.host.active


def adapter_name(path: Path) -> str:
    """A stable adapter name for a folder (PEFT module names may not contain dots)."""
    import hashlib

    return "a" + hashlib.sha256(str(path).encode()).hexdigest()[:16]


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

        `base` is the base model's folder when `path` is a LoRA adapter: adapters of one base share one
        loaded copy of it (multi-LoRA), each request running through its own adapter in the same batch."""
        if kind == CAUSAL and base is not None and (path / "adapter_config.json").is_file():
            return self._adapter(path, base)
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
            if kind == LORA_HOST:
                loaded = load_lora_host(path)
            else:
                loaded = load_causal_lm(path, self.cache_dir, base=base) if kind == CAUSAL else load_encoder(path)
            log.info("loaded %s (%s, %.0f MB on %s)", path, kind, loaded.nbytes / 2**20, loaded.device)
            deployment = Deployment(loaded, Scheduler(loaded, self.max_batch) if kind != ENCODER else None,
                                    threading.Lock())
            with self._lock:
                self._deployments[key] = deployment
                self._loading.pop(key, None)
                self._evict(keep=key)
            return deployment

    def _adapter(self, path: Path, base: Path) -> Deployment:
        host = self.get(base, LORA_HOST)
        name = adapter_name(path)
        with host.scheduler.step_lock:
            if name not in host.loaded.model.peft_config:
                host.loaded.model.load_adapter(str(path), adapter_name=name)
                size = sum(p.numel() * p.element_size() for n, p in host.loaded.model.named_parameters()
                           if f".{name}." in n)
                host.loaded.nbytes += size
                log.info("added LoRA adapter %s to the shared %s (%.1f MB)", path, base, size / 2**20)
        return Deployment(host.loaded, AdapterScheduler(host.scheduler, name), host.lock)

    def unload(self, path: Path) -> None:
        """Drop every deployment of these weights (a deleted provisioned throughput's model)."""
        name = adapter_name(path)
        with self._lock:
            hosts = [d for key, d in self._deployments.items() if key[1] == LORA_HOST]
        for host in hosts:
            with host.scheduler.step_lock:
                if name in host.loaded.model.peft_config:
                    host.loaded.model.delete_adapter(name)
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
