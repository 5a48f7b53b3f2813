"""vLLM behind the scheduler's interface, for GPUs (engine = "vllm"); the transformers scheduler stays the default
and the only engine on CPUs.

`VllmScheduler` answers `submit(prompt_ids, params, adapter, cancelled)` with the same `GenerationStream` as
`inference.scheduler.Scheduler`, so the runtime, provisioning and the APIs above do not know which engine
generates. vLLM does what our scheduler does on CPUs, on a GPU's terms: continuous batching with paged
attention, and multi-LoRA (each provisioned custom model an adapter of its base, sent with its request).

What maps where (the pure functions below are tested on CPU; vLLM itself needs a GPU and runs in
bench/gpu.sh):
- `SamplingParams` -> vLLM's: temperature 0 or top-k 1 is greedy, top-k 0 means off (vLLM: -1), the seed is
  per request, stop strings are vLLM's (left out of the text, and reported as the stop sequence), a grammar
  (tool calls, JSON answers: llguidance's Lark dialect) goes to vLLM's structured outputs on its `guidance`
  backend, which is llguidance too; special tokens a tool call needs visible keep special tokens in the text.
- Model units -> vLLM capacity: the engine holds `max_batch_sequences` sequences at once (vLLM's
  max_num_seqs), as the transformers scheduler does, and provisioned throughput claims its units' slots of
  them (provisioning/capacity.py) the same way on either engine; a LoRA host holds as many adapters in one
  batch as units fit in it (each unit at least `mu_concurrent_sequences` slots).
- The wait for a slot: vLLM queues requests itself, so `max_queue_wait_seconds` does not apply; requests
  beyond the batch wait in vLLM's queue. A request cancelled (its client gone) is aborted at its next output.
- Memory: one vLLM engine per base model (its adapters share it: plain requests go through the LoRA host with
  no adapter), each reserving `vllm_gpu_memory_fraction` of the GPU for weights and KV cache as it starts; its
  weights' size is what counts against `model_memory_bytes`. Starting one more engine than the GPU holds first
  unloads idle ones (engine.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any

from outcrop.errors import Cancelled
from outcrop.inference.sampling import SamplingParams
from outcrop.inference.scheduler import END_OF_TEXT, LENGTH, STOP_SEQUENCE, Completion, GenerationStream, _Sequence

log = logging.getLogger(__name__)

#: Largest LoRA rank a vLLM host accepts (vLLM sizes its adapter buffers by it); Outcrop's loraRank goes to 256.
MAX_LORA_RANK = 256


def engine_args(path: Path, *, lora_host: bool, max_batch: int, mu_concurrent_sequences: int,
                context_length: int, memory_fraction: float = 0.9, seed: int = 0) -> dict[str, Any]:
    """vLLM's AsyncEngineArgs for one model folder (the structured outputs config as a dict: `_start` makes it
    vLLM's object). `memory_fraction` is the share of the GPU this engine reserves (weights and KV cache)."""
    args: dict[str, Any] = {
        "model": str(path), "tokenizer": str(path), "max_num_seqs": max_batch, "seed": seed,
        "max_model_len": context_length, "structured_outputs_config": {"backend": "guidance"},
        "enable_prefix_caching": True, "gpu_memory_utilization": memory_fraction,
    }
    if lora_host:
        args.update(enable_lora=True, max_loras=max(1, max_batch // max(1, mu_concurrent_sequences)),
                    max_lora_rank=MAX_LORA_RANK)
    return args


def sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """vLLM's SamplingParams for ours."""
    kwargs: dict[str, Any] = {
        "n": 1, "max_tokens": params.max_tokens, "seed": params.seed, "stop": list(params.stop),
        "include_stop_str_in_output": False, "skip_special_tokens": not params.visible_tokens,
        "spaces_between_special_tokens": False,
    }
    if params.greedy:
        kwargs.update(temperature=0.0, top_p=1.0, top_k=-1)
    else:
        kwargs.update(temperature=params.temperature, top_p=params.top_p,
                      top_k=params.top_k if params.top_k > 0 else -1)
    if params.grammar is not None:
        kwargs["grammar"] = params.grammar
    return kwargs


def finish(reason: str | None, stop_reason: Any) -> tuple[str, str | None]:
    """(engine finish reason, stop sequence) for vLLM's finish_reason and stop_reason."""
    if reason == "length":
        return LENGTH, None
    if reason == "stop" and isinstance(stop_reason, str):
        return STOP_SEQUENCE, stop_reason
    return END_OF_TEXT, None


class VllmScheduler:
    """One vLLM engine (AsyncLLM) on an event loop of its own thread; `submit` from any thread."""

    def __init__(self, args: dict[str, Any]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="outcrop-vllm", daemon=True)
        self._thread.start()
        self._ids = itertools.count()
        self._lora_ids = itertools.count(1)  # vLLM keys adapters by this number: never reused
        self._adapters: dict[str, Any] = {}  # name -> vLLM LoRARequest
        self._live: set[_Sequence] = set()  # told when the engine closes
        self._active = 0
        self._counting = threading.Lock()  # `active` is changed from callers' threads and the loop's
        #: Held by callers that change the adapters, as with the transformers scheduler.
        self.step_lock = threading.Lock()
        self._engine = asyncio.run_coroutine_threadsafe(self._start(args), self._loop).result()

    @staticmethod
    async def _start(args: dict[str, Any]) -> Any:
        from vllm import AsyncEngineArgs
        from vllm.config import StructuredOutputsConfig
        from vllm.v1.engine.async_llm import AsyncLLM

        args = {**args, "structured_outputs_config": StructuredOutputsConfig(**args["structured_outputs_config"])}
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**args))

    def add_adapter(self, name: str, path: Path) -> None:
        """Serve a LoRA adapter of this engine's model (vLLM loads it with the first request that names it)."""
        from vllm.lora.request import LoRARequest

        with self.step_lock:
            if name not in self._adapters:
                self._adapters[name] = LoRARequest(name, next(self._lora_ids), str(path))

    def remove_adapter(self, name: str) -> None:
        with self.step_lock:
            request = self._adapters.pop(name, None)
        if request is not None:
            asyncio.run_coroutine_threadsafe(self._engine.remove_lora(request.lora_int_id), self._loop).result()

    def has_adapter(self, name: str) -> bool:
        return name in self._adapters

    @property
    def active(self) -> int:
        return self._active

    def submit(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None,
               cancelled: threading.Event | None = None) -> GenerationStream:
        sequence = _Sequence(prompt_ids=list(prompt_ids), params=params, generator=None, adapter=adapter)
        if cancelled is not None:
            sequence.cancelled = cancelled
        lora = self._adapters[adapter] if adapter is not None else None
        sequence.dequeued.set()  # vLLM's queue is its own
        with self._counting:
            self._active += 1
            self._live.add(sequence)
        asyncio.run_coroutine_threadsafe(self._generate(sequence, lora), self._loop)
        return GenerationStream(sequence)

    async def _generate(self, sequence: _Sequence, lora: Any) -> None:
        from vllm import SamplingParams as VllmParams

        request_id = f"outcrop-{next(self._ids)}"
        kwargs = sampling_kwargs(sequence.params)
        grammar = kwargs.pop("grammar", None)
        if grammar is not None:
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(grammar=grammar)
        text, tokens = "", 0
        try:
            async for output in self._engine.generate({"prompt_token_ids": sequence.prompt_ids},
                                                      VllmParams(**kwargs), request_id, lora_request=lora):
                if sequence.cancelled.is_set():
                    await self._engine.abort(request_id)
                    sequence.events.put(Cancelled())
                    return
                out = output.outputs[0]
                if sequence.first_token_at is None and out.token_ids:
                    sequence.first_token_at = time.perf_counter()
                if len(out.text) > len(text):
                    sequence.events.put(out.text[len(text):])
                text, tokens = out.text, len(out.token_ids)
                sequence.output_ids = list(out.token_ids)
                if output.finished:
                    reason, stop = finish(out.finish_reason, out.stop_reason)
                    now = time.perf_counter()
                    sequence.events.put(Completion(
                        text=text, input_tokens=len(sequence.prompt_ids), output_tokens=tokens, finish_reason=reason,
                        stop_sequence=stop, first_token_s=(sequence.first_token_at or now) - sequence.submitted,
                        total_s=now - sequence.submitted))
        except Exception as exc:  # handed to the consumer, never lost on the loop
            log.warning("vLLM request %s failed: %r", request_id, exc)
            sequence.events.put(exc)
        finally:
            with self._counting:
                self._active -= 1
                self._live.discard(sequence)

    def close(self) -> None:
        """Unloaded: the requests still generating end with an error their callers see, as on our scheduler."""
        with self._counting:
            live, self._live = list(self._live), set()
        for sequence in live:
            sequence.events.put(RuntimeError("the model was unloaded while it generated"))
        try:
            self._engine.shutdown()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
