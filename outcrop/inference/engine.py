"""The engine: models loaded on first use, one scheduler each, unloaded least-recently-used.

The engine knows files and tokens only. Callers name a model by the path of its weights (a folder
or a GGUF file) and its kind; several names for one path share one loaded copy.

A load runs once however many callers ask for it; each caller may bound its wait (`get(wait=...)`),
leaving the load to finish in the background, so that a client whose request arrives while a model
loads is told to come back (ModelNotReadyException) before its own read timeout fires. `state` says
without blocking where a model stands; `Preload` loads a list of models when the server starts.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from outcrop.errors import ModelNotReadyException
from outcrop.inference import llama_cpp
from outcrop.inference.clip import CLIP, load_clip
from outcrop.inference.images import IMAGE, ImageScheduler, load_image_pipeline
from outcrop.inference.loader import (
    CAUSAL,
    ENCODER,
    LORA_HOST,
    RERANKER,
    LoadedModel,
    describe_causal_lm,
    load_causal_lm,
    load_encoder,
    load_lora_host,
    load_reranker,
)
from outcrop.inference.sampling import SamplingParams
from outcrop.inference.scheduler import Scheduler
from outcrop.inference.segmentation import SEGMENTATION, load_segmenter
from outcrop.inference.vision import VISION, load_vision_model
from outcrop.inference.vllm_engine import VllmScheduler, engine_args

log = logging.getLogger(__name__)

#: How the kinds that need nothing but their folder load (causal models and image pipelines take more).
LOADERS: dict[str, Callable[[Path], LoadedModel]] = {ENCODER: load_encoder, RERANKER: load_reranker,
                                                    # One request at a time under the lock (inference/vision.py).
                                                    VISION: load_vision_model, CLIP: load_clip,
                                                    SEGMENTATION: load_segmenter}

#: What `Engine.state` answers for a model: loaded, being loaded, never asked for (or unloaded since).
READY = "ready"
LOADING = "loading"
NOT_LOADED = "not loaded"
#: ... or this prefix and the error's type name, when its last load failed (never the message: it may
#: carry paths, and the health endpoint that shows it is unauthenticated).
FAILED = "failed"


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


@dataclass(eq=False)
class _Load:
    """One load in progress: the callers that asked for it wait on `done`, then read its outcome."""

    done: threading.Event = field(default_factory=threading.Event)
    deployment: Deployment | None = None
    error: BaseException | None = None


class Engine:
    def __init__(self, cache_dir: Path, memory_budget_bytes: int, max_batch: int = 16,
                 max_queue_wait_s: float | None = None, generator: str = "transformers",
                 mu_concurrent_sequences: int = 2, vllm_gpu_fraction: float = 0.9, max_image_batch: int = 8) -> None:
        #: What generates text: "transformers" (our scheduler, CPU or GPU) or "vllm" (GPU; inference/vllm_engine.py).
        #: Encoders and rerankers run on transformers either way.
        self.generator = generator
        self.mu_concurrent_sequences = mu_concurrent_sequences
        #: The share of the GPU each vLLM engine reserves when it starts (weights and KV cache).
        self.vllm_gpu_fraction = vllm_gpu_fraction
        self.cache_dir = cache_dir
        self.memory_budget_bytes = memory_budget_bytes
        self.max_batch = max_batch
        #: The most images one denoising batch makes (requests of one shape join it; inference/images.py).
        self.max_image_batch = max_image_batch
        #: Each scheduler's bound on the wait for a place in the batch (None: unbounded, for jobs).
        self.max_queue_wait_s = max_queue_wait_s
        self._deployments: OrderedDict[tuple[str, str], Deployment] = OrderedDict()
        self._loading: dict[tuple[str, str], _Load] = {}
        #: Why the last load of these weights failed (the error's type name), until one succeeds.
        self._failed: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def get(self, path: Path, kind: str = CAUSAL, base: Path | None = None, wait: float | None = None) -> Deployment:
        """The deployment for these weights, loading them (once, even when asked concurrently).

        `base` is the base model's folder when `path` is a LoRA adapter: adapters of one base share one
        loaded copy of it (multi-LoRA), each request running through its own adapter in the same batch.

        `wait` None blocks until the model is loaded (a load this call starts runs in this thread). A
        number bounds the wait: a load this call starts runs in a background thread, and when it has not
        finished within `wait` seconds this raises ModelNotReadyException while the load goes on, so a
        later call finds the model ready. A load that fails raises its error in every caller waiting
        for it; the next call tries again."""
        if kind == CAUSAL and base is not None and (path / "adapter_config.json").is_file():
            return self._adapter(path, base, wait)
        kind = self._hosting(kind)
        key = (str(path), kind)
        with self._lock:
            if key in self._deployments:
                self._deployments.move_to_end(key)
                return self._deployments[key]
            load = self._loading.get(key)
            starting = load is None
            if starting:
                load = self._loading[key] = _Load()
        if starting:
            if wait is None:
                self._load(key, path, kind, base, load)
            else:
                threading.Thread(target=self._load, args=(key, path, kind, base, load), daemon=True,
                                 name=f"outcrop-load-{path.name}").start()
        if not load.done.wait(wait):
            raise ModelNotReadyException(
                "The model is not ready to serve inference requests yet: it is still loading. "
                "Try your request again shortly.")
        if load.error is not None:
            raise load.error
        return load.deployment

    def _hosting(self, kind: str) -> str:
        """On vLLM a base is always loaded as a LoRA host, its adapters beside it: one engine per base (each vLLM
        engine reserves its share of the GPU), plain requests running with no adapter."""
        return LORA_HOST if kind == CAUSAL and self.generator == "vllm" else kind

    def state(self, path: Path, kind: str = CAUSAL) -> str:
        """READY, LOADING, NOT_LOADED, or "failed: <error type>" for these weights; never blocks."""
        key = (str(path), self._hosting(kind))
        with self._lock:
            if key in self._deployments:
                return READY
            if key in self._loading:
                return LOADING
            if key in self._failed:
                return f"{FAILED}: {self._failed[key]}"
            return NOT_LOADED

    def _load(self, key: tuple[str, str], path: Path, kind: str, base: Path | None, load: _Load) -> None:
        """Load the weights and publish the outcome to every caller waiting on `load`."""
        try:
            if self.generator == "vllm" and kind in (CAUSAL, LORA_HOST):
                load.deployment = self._vllm(path, kind)
            elif kind == LORA_HOST:
                loaded = load_lora_host(path)
            elif kind == CAUSAL and self._on_llama_cpp(path, base):
                loaded = llama_cpp.load_gguf(path, self.cache_dir, self.max_batch)
            elif kind == CAUSAL:
                loaded = load_causal_lm(path, self.cache_dir, base=base)
            elif kind == IMAGE:
                loaded = load_image_pipeline(path, base=base)
            else:
                loaded = LOADERS[kind](path)
            if load.deployment is None:
                log.info("loaded %s (%s, %.0f MB on %s, %s)", path, kind, loaded.nbytes / 2**20, loaded.device,
                         loaded.extra.get("engine", "transformers"))
                # Encoders and rerankers run one forward pass under the deployment's lock; generation batches in
                # its scheduler, and so do images, in theirs (requests of one shape denoise together).
                if loaded.extra.get("engine") == llama_cpp.LLAMA_CPP:
                    scheduler = llama_cpp.LlamaCppScheduler(loaded, self.max_batch, self.max_queue_wait_s)
                elif kind in (CAUSAL, LORA_HOST):
                    scheduler = Scheduler(loaded, self.max_batch, self.max_queue_wait_s)
                elif kind == IMAGE:
                    scheduler = ImageScheduler(loaded, self.max_image_batch, self.max_queue_wait_s)
                else:
                    scheduler = None
                load.deployment = Deployment(loaded, scheduler, threading.Lock())
            with self._lock:
                self._deployments[key] = load.deployment
                self._failed.pop(key, None)
                self._loading.pop(key, None)
                self._evict(keep=key)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting callers, never lost in a thread
            log.warning("loading %s (%s) failed: %r", path, kind, exc)
            load.error = exc
            with self._lock:
                self._failed[key] = type(exc).__name__
                self._loading.pop(key, None)
        finally:
            load.done.set()

    def _on_llama_cpp(self, path: Path, base: Path | None) -> bool:
        """Whether a causal model runs on llama.cpp: a GGUF file (not a LoRA adapter's base: adapters are served
        by transformers' multi-LoRA), with engine "llama.cpp", or "auto" when llama-cpp-python is installed."""
        if path.suffix.lower() != ".gguf" or base is not None or self.generator not in (llama_cpp.AUTO,
                                                                                        llama_cpp.LLAMA_CPP):
            return False
        if llama_cpp.available():
            return True
        if self.generator == llama_cpp.LLAMA_CPP:
            raise RuntimeError("engine = \"llama.cpp\" needs llama-cpp-python: pip install 'outcrop[llama]'")
        return False

    def _vllm(self, path: Path, kind: str) -> Deployment:
        """A vLLM engine for these weights (a LoRA host: with multi-LoRA on), behind the scheduler's interface."""
        loaded = describe_causal_lm(path, self.cache_dir)
        self._gpu_room_for_vllm()
        scheduler = VllmScheduler(engine_args(loaded.extra["folder"], lora_host=kind == LORA_HOST,
                                              max_batch=self.max_batch,
                                              mu_concurrent_sequences=self.mu_concurrent_sequences,
                                              context_length=loaded.context_length,
                                              memory_fraction=self.vllm_gpu_fraction))
        log.info("serving %s (%s) on vLLM", path, kind)
        return Deployment(loaded, scheduler, threading.Lock())

    def _gpu_room_for_vllm(self) -> None:
        """vLLM reserves its share of the GPU as it starts and fails without it: idle vLLM engines are unloaded
        first, least recently used first, until one more share fits; if busy ones leave no room, this load fails
        (and is retried by a later request)."""
        with self._lock:
            engines = [(key, d) for key, d in self._deployments.items() if isinstance(d.scheduler, VllmScheduler)]
            held = len(engines) * self.vllm_gpu_fraction
            for key, deployment in engines:
                if held + self.vllm_gpu_fraction <= 0.95:
                    break
                if not deployment.busy:
                    log.info("unloading %s: vLLM needs its share of the GPU for another model", key[0])
                    del self._deployments[key]
                    deployment.close()
                    held -= self.vllm_gpu_fraction
        if held + self.vllm_gpu_fraction > 0.95:
            raise RuntimeError(f"no room on the GPU for another vLLM engine ({len(engines)} loaded and busy, each "
                               f"reserving {self.vllm_gpu_fraction:.0%}; see vllm_gpu_memory_fraction)")

    def _adapter(self, path: Path, base: Path, wait: float | None = None) -> Deployment:
        host = self.get(base, LORA_HOST, wait=wait)
        name = adapter_name(path)
        if isinstance(host.scheduler, VllmScheduler):  # vLLM loads the adapter with its first request
            host.scheduler.add_adapter(name, path)
            return Deployment(host.loaded, AdapterScheduler(host.scheduler, name), host.lock)
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
            if isinstance(host.scheduler, VllmScheduler):
                host.scheduler.remove_adapter(name)
                continue
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


class BoundedEngine:
    """The engine as the request path sees it: `get` waits at most `load_wait_s` for a model that is loading,
    then answers ModelNotReadyException (which the AWS SDKs retry) while the load goes on, instead of
    holding a client past its read timeout. Everything else is the engine's own.

    Background work (provisioning a throughput, a job's own runtime) uses the engine itself and waits for a
    load however long it takes."""

    def __init__(self, engine: Engine, load_wait_s: float) -> None:
        self.engine = engine
        self.load_wait_s = load_wait_s

    def get(self, path: Path, kind: str = CAUSAL, base: Path | None = None) -> Deployment:
        return self.engine.get(path, kind, base, wait=self.load_wait_s)

    def __getattr__(self, name: str):
        return getattr(self.engine, name)


class Preload:
    """Models loaded in the background when the server starts, and how far each has got.

    `targets` maps a name (a model id: the engine knows none) to a function giving its weights and kind;
    it may be slow (fetching weights) or raise (an unknown model). The models load one after another,
    in order, in one daemon thread, through `Engine.get`: a request that asks for one of them meanwhile
    waits on that same load instead of starting a second one."""

    def __init__(self, engine: Engine, targets: dict[str, Callable[[], tuple[Path, str]]]) -> None:
        self.engine = engine
        self.targets = dict(targets)
        self._resolved: dict[str, tuple[Path, str] | str] = {}  # name -> (path, kind), or why it failed
        self._done = threading.Event()
        self._started = False
        if not self.targets:
            self._done.set()

    def start(self) -> Preload:
        """Start loading in a daemon thread (once; later calls do nothing) and return at once."""
        if self.targets and not self._started:
            self._started = True
            threading.Thread(target=self._run, name="outcrop-preload", daemon=True).start()
        return self

    def _run(self) -> None:
        try:
            for name, resolve in self.targets.items():
                try:
                    target = resolve()
                except Exception as exc:  # noqa: BLE001 - an unknown model or missing weights: reported, not fatal
                    log.warning("preloading %s failed: %r", name, exc)
                    self._resolved[name] = f"{FAILED}: {type(exc).__name__}"
                    continue
                log.info("preloading %s", name)
                try:
                    self.engine.get(*target)
                except Exception:  # noqa: BLE001 - the engine logged it and `state` reports it
                    pass
                finally:  # from now on the engine's state is this model's (LOADING until then)
                    self._resolved[name] = target
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        """Every model has been tried (loaded or failed)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def models(self) -> dict[str, str]:
        """Each preloaded model's state: READY, LOADING (also while waiting for its turn), "failed: ..." or
        NOT_LOADED (unloaded since to stay within the memory budget)."""
        states = {}
        for name in self.targets:
            target = self._resolved.get(name)
            if target is None:
                states[name] = LOADING
            elif isinstance(target, str):
                states[name] = target
            else:
                states[name] = self.engine.state(*target)
        return states

    def status(self) -> str:
        """LOADING until every model has been tried; then READY, or FAILED if one of them is not loaded
        because its load failed (a request for it tries again, and a success makes the server ready) or
        its name could not be resolved (an unknown id, weights not to be had: until a restart)."""
        if not self.done:
            return LOADING
        return FAILED if any(s.startswith(FAILED) for s in self.models().values()) else READY
