"""Continuous batching for one causal language model.

One worker thread owns the model. Each step it either prefills the requests that arrived since the
last step (all of them in one left-padded forward pass) and merges them into the running batch, or
runs one decode step for every running sequence at once. Finished sequences leave the batch at
once, so a short answer never waits for a long one, and new requests join without waiting for the
batch to drain. The KV cache of the batch is one set of left-padded tensors per layer; joining pads
the shorter side on the left, leaving trims columns that no remaining sequence uses.

Tokens reach the caller through a queue as they are produced (`GenerationStream`), with stop
sequences held back until they can no longer be the start of a stop sequence.

The wait for a place in the batch can be bounded (`max_queue_wait_s`, the server's setting): then
`submit` returns only once its request is in the batch, and a request that finds no place in time
leaves the queue and raises ThrottlingException, which the AWS SDKs retry with backoff. So a client
under load is told to come back while its own read timeout is still far, and it is told before any
response (even a stream's) has begun.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from outcrop.errors import Cancelled, ThrottlingException
from outcrop.inference.grammar import Grammars
from outcrop.inference.loader import LoadedModel
from outcrop.inference.sampling import SamplingParams, sample_batch

log = logging.getLogger(__name__)

#: Why a generation ended, in the engine's own words (each API maps them to its vocabulary).
END_OF_TEXT = "end"
LENGTH = "length"
STOP_SEQUENCE = "stop_sequence"


@dataclass
class Completion:
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str
    stop_sequence: str | None
    #: Seconds from submission to the first token, and to the end.
    first_token_s: float
    total_s: float


class GenerationStream:
    """Iterate for text deltas as they are produced; `completion` holds the summary at the end."""

    def __init__(self, sequence: _Sequence) -> None:
        self._sequence = sequence
        self.completion: Completion | None = None

    @property
    def produced_tokens(self) -> int:
        """Tokens generated so far; final once the stream has ended or raised Cancelled. Read from the
        consumer's thread while the worker may still be appending: a length, at most a step behind."""
        return len(self._sequence.output_ids)

    def __iter__(self):
        try:
            while True:
                item = self._sequence.events.get()
                if isinstance(item, Completion):
                    self.completion = item
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if self.completion is None:  # the consumer went away: stop spending compute on it
                self._sequence.cancelled.set()

    def result(self) -> Completion:
        """Drain the stream and return the completion (for non-streaming callers)."""
        for _ in self:
            pass
        assert self.completion is not None
        return self.completion


@dataclass(eq=False)
class _Sequence:
    prompt_ids: list[int]
    params: SamplingParams
    generator: torch.Generator
    #: The LoRA adapter this sequence runs through, on a model hosting several (None: the base alone).
    adapter: str | None = None
    submitted: float = field(default_factory=time.perf_counter)
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    output_ids: list[int] = field(default_factory=list)
    emitted: int = 0  # characters of the decoded text already sent
    first_token_at: float | None = None
    done: bool = False
    #: Set when the sequence leaves the queue: admitted into the batch, cancelled, or the model unloaded.
    dequeued: threading.Event = field(default_factory=threading.Event)
    #: The grammar's matcher when the params carry one (constrained decoding), at the tokens sampled so far.
    matcher: object | None = None


#: Bedrock's words when it has no room for a request.
THROTTLED = "Too many requests, please wait before trying again."


class Scheduler:
    def __init__(self, loaded: LoadedModel, max_batch: int = 16, max_queue_wait_s: float | None = None) -> None:
        self.loaded = loaded
        self.max_batch = max_batch
        #: Seconds a request may wait for a place in the batch before ThrottlingException; None: no bound.
        self.max_queue_wait_s = max_queue_wait_s
        self.grammars = Grammars(loaded.tokenizer, getattr(loaded.model.config, "vocab_size", 0) or 0, loaded.eos_ids)
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [batch, columns] 1 where the cache holds a real token
        self._positions: torch.Tensor | None = None  # [batch] position id of the token in _last
        self._last: torch.Tensor | None = None  # [batch] the token to feed next
        self._wake = threading.Condition()
        #: Held for each step, so that adapters are added or removed only between steps.
        self.step_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="outcrop-scheduler", daemon=True)
        self._thread.start()

    # -- the caller's side ----------------------------------------------------------------------

    def submit(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None,
               cancelled: threading.Event | None = None) -> GenerationStream:
        """Queue a generation. `cancelled`, when given, is the caller's own cancel event (set when its
        client hangs up): the sequence leaves the batch at the next step after it is set, and its
        stream raises Cancelled, so a consumer blocked waiting for the next token wakes up too.

        With a bound on the queue (`max_queue_wait_s`), this returns once the request is in the batch (or
        cancelled: its stream raises Cancelled), and raises ThrottlingException when it found no place
        within the bound; it has then left the queue and used no compute. Without one it returns at once."""
        if not prompt_ids:
            raise ValueError("a prompt needs at least one token")
        sequence = _Sequence(list(prompt_ids), params, params.generator(self.loaded.device), adapter=adapter,
                             cancelled=cancelled if cancelled is not None else threading.Event(),
                             matcher=self.grammars.matcher(params.grammar) if params.grammar else None)
        with self._wake:
            if self._closed:
                raise RuntimeError("the model was unloaded")
            self._waiting.append(sequence)
            self._wake.notify()
        if self.max_queue_wait_s is not None and not sequence.dequeued.wait(self.max_queue_wait_s):
            with self._wake:
                if sequence in self._waiting:  # still no place: out of the queue, before the worker takes it
                    self._waiting.remove(sequence)
                    sequence.done = True
                    raise ThrottlingException(THROTTLED)
            sequence.dequeued.wait()  # the worker took it just now (it sets the event under the same lock)
        return GenerationStream(sequence)

    @property
    def active(self) -> int:
        return len(self._waiting) + len(self._running)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)
        for sequence in [*self._waiting, *self._running]:
            sequence.events.put(RuntimeError("the model was unloaded"))
            sequence.dequeued.set()

    # -- the worker -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                while True:
                    # A request cancelled while it waited for room never takes a slot in the batch.
                    for sequence in [s for s in self._waiting if s.cancelled.is_set()]:
                        self._waiting.remove(sequence)
                        _leave_cancelled(sequence)
                        sequence.dequeued.set()
                    if self._closed or self._waiting or self._running:
                        break
                    self._wake.wait()
                if self._closed:
                    return
                room = self.max_batch - len(self._running)
                if not self._merge_supported() and self._running:
                    room = 0  # this cache type cannot take newcomers mid-batch: drain first
                admitted: list[_Sequence] = []
                while self._waiting and len(admitted) < room and self._fits(self._waiting[0], admitted):
                    admitted.append(self._waiting.popleft())
                for sequence in admitted:
                    sequence.dequeued.set()
            try:
                with self.step_lock, torch.inference_mode():
                    if admitted:
                        self._prefill(admitted)
                    else:
                        self._decode()
            except Exception as exc:  # a failed step fails its sequences, never the worker
                log.exception("generation step failed")
                for sequence in [*admitted, *self._running]:
                    if not sequence.done:
                        sequence.events.put(exc)
                self._running, self._cache = [], None

    def _fits(self, sequence: _Sequence, admitted: list[_Sequence]) -> bool:
        """Whether `sequence` may join the batch now beside the running ones and `admitted` (this cache grows with
        the batch: always; an engine with a fixed KV pool checks its room)."""
        return True

    def _merge_supported(self) -> bool:
        return self._cache is None or all(type(layer) is DynamicLayer for layer in self._cache.layers)

    def _prefill(self, admitted: list[_Sequence]) -> None:
        device = self.loaded.device
        pad = self.loaded.tokenizer.pad_token_id or 0
        width = max(len(s.prompt_ids) for s in admitted)
        ids = torch.full((len(admitted), width), pad, dtype=torch.long)
        mask = torch.zeros((len(admitted), width), dtype=torch.long)
        for row, sequence in enumerate(admitted):
            ids[row, width - len(sequence.prompt_ids):] = torch.tensor(sequence.prompt_ids)
            mask[row, width - len(sequence.prompt_ids):] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.loaded.model(input_ids=ids, attention_mask=mask, position_ids=positions, **_adapters(admitted),
                                cache=DynamicCache(config=self.loaded.model.config),
                                use_cache=True, logits_to_keep=1)
        # Each row's position is its last prompt token's; _advance moves it to the sampled token's.
        self._join(admitted, out.cache, mask, positions[:, -1])
        self._advance(out.logits[:, -1, :], start=len(self._running) - len(admitted))

    def _decode(self) -> None:
        device = self.loaded.device
        self._mask = torch.cat([self._mask, torch.ones((len(self._running), 1), dtype=torch.long,
                                                       device=device)], dim=1)
        out = self.loaded.model(input_ids=self._last[:, None], attention_mask=self._mask, **_adapters(self._running),
                                position_ids=self._positions[:, None], cache=self._cache,
                                use_cache=True, logits_to_keep=1)
        self._cache = out.cache
        self._advance(out.logits[:, -1, :], start=0)

    def _advance(self, logits: torch.Tensor, start: int) -> None:
        """Sample a token for rows start.. of the batch, emit text, and retire finished sequences."""
        sequences = self._running[start:]
        self.grammars.mask(logits, [(row, s.matcher) for row, s in enumerate(sequences) if s.matcher is not None])
        tokens = sample_batch(logits, [s.params for s in sequences], [s.generator for s in sequences])
        for sequence, token in zip(sequences, tokens, strict=True):
            if not sequence.cancelled.is_set():  # a token for no one is neither sent nor counted
                emit(self.loaded, sequence, token)
        self._last[start:] = torch.tensor(tokens, dtype=torch.long, device=self._last.device)
        self._positions[start:] += 1
        keep = [i for i, s in enumerate(self._running) if not s.done and not s.cancelled.is_set()]
        if len(keep) < len(self._running):
            for sequence in self._running:
                if not sequence.done and sequence.cancelled.is_set():
                    _leave_cancelled(sequence)
            self._retain(keep)

    # -- the batch's KV cache -------------------------------------------------------------------

    def _join(self, admitted: list[_Sequence], cache: DynamicCache, mask: torch.Tensor,
              positions: torch.Tensor) -> None:
        last = torch.zeros(len(admitted), dtype=torch.long, device=mask.device)
        if self._cache is None or not self._running:
            self._cache, self._mask, self._positions, self._last = cache, mask, positions, last
            self._running = list(admitted)
            return
        old_width, new_width = self._mask.shape[1], mask.shape[1]
        width = max(old_width, new_width)
        for old_layer, new_layer in zip(self._cache.layers, cache.layers, strict=True):
            old_layer.keys = torch.cat([_left_pad(old_layer.keys, width), _left_pad(new_layer.keys, width)])
            old_layer.values = torch.cat([_left_pad(old_layer.values, width), _left_pad(new_layer.values, width)])
        self._mask = torch.cat([_left_pad(self._mask, width, dim=1), _left_pad(mask, width, dim=1)])
        self._positions = torch.cat([self._positions, positions])
        self._last = torch.cat([self._last, last])
        self._running.extend(admitted)

    def _retain(self, keep: list[int]) -> None:
        self._running = [self._running[i] for i in keep]
        if not keep:
            self._cache = self._mask = self._positions = self._last = None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self._mask.device)
        self._mask, self._positions, self._last = self._mask[index], self._positions[index], self._last[index]
        self._cache.batch_select_indices(index)
        # Drop leading columns that only finished sequences used.
        first = int(self._mask.any(dim=0).int().argmax())
        if first > 0 and self._merge_supported():
            self._mask = self._mask[:, first:]
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]


def emit(loaded: LoadedModel, sequence: _Sequence, token: int) -> None:
    """Take one sampled token into `sequence`: text to its consumer (stop sequences held back until they
    cannot start one), and its Completion once it ends (end of text, a stop sequence, its budget or the
    context window). Shared by the batch and by engines that generate one request at a time."""
    now = time.perf_counter()
    if sequence.first_token_at is None:
        sequence.first_token_at = now
    params, tokenizer = sequence.params, loaded.tokenizer
    finish, stop_hit = None, None
    if token in loaded.eos_ids:
        finish = END_OF_TEXT
    else:
        sequence.output_ids.append(token)
        if sequence.matcher is not None:
            if not sequence.matcher.consume_token(token):  # cannot happen with a mask; never loop on it
                sequence.done = True
                sequence.events.put(RuntimeError(f"constrained decoding failed: {sequence.matcher.get_error()}"))
                return
            if sequence.matcher.is_stopped():  # the grammar is complete: nothing may follow
                finish = END_OF_TEXT
    text = _decode(tokenizer, sequence.output_ids, params.visible_tokens)
    cut = len(text)
    for stop in params.stop:
        index = text.find(stop, max(0, sequence.emitted - len(stop)))
        if 0 <= index < cut:
            cut, stop_hit, finish = index, stop, STOP_SEQUENCE
    if finish is None and (len(sequence.output_ids) >= params.max_tokens or
                           len(sequence.prompt_ids) + len(sequence.output_ids) >= loaded.context_length):
        finish = LENGTH
    if finish is None:
        # Hold back what could still grow into a stop sequence, and a half-decoded character.
        holdback = max((len(s) - 1 for s in params.stop), default=0)
        cut = len(text) - holdback
        while cut > sequence.emitted and text[cut - 1] == "\ufffd":
            cut -= 1
    if cut > sequence.emitted:
        sequence.events.put(text[sequence.emitted:cut])
        sequence.emitted = cut
    if finish is not None:
        sequence.done = True
        sequence.events.put(Completion(
            text=text[:cut], input_tokens=len(sequence.prompt_ids), output_tokens=len(sequence.output_ids),
            finish_reason=finish, stop_sequence=stop_hit,
            first_token_s=sequence.first_token_at - sequence.submitted, total_s=now - sequence.submitted))


def _decode(tokenizer, ids: list[int], visible: frozenset[int]) -> str:
    """The text of `ids` without special tokens, except the `visible` ones (a tool call's marker token):
    the runs between them are decoded as usual, and each visible token as its own text."""
    if not visible or visible.isdisjoint(ids):
        return tokenizer.decode(ids, skip_special_tokens=True)
    parts, start = [], 0
    for i, token in enumerate(ids):
        if token in visible:
            parts += [tokenizer.decode(ids[start:i], skip_special_tokens=True),
                      tokenizer.decode([token], skip_special_tokens=False)]
            start = i + 1
    parts.append(tokenizer.decode(ids[start:], skip_special_tokens=True))
    return "".join(parts)


def _leave_cancelled(sequence: _Sequence) -> None:
    """Tell a cancelled sequence's consumer that it is out of the batch: its token count is final now."""
    sequence.done = True
    sequence.events.put(Cancelled("the generation was cancelled"))


#: PEFT's name for "no adapter" in a mixed batch.
BASE_ADAPTER = "__base__"


def _adapters(sequences: list[_Sequence]) -> dict[str, list[str]]:
    """PEFT's per-row adapter routing, for a batch that mixes adapters of one base (multi-LoRA)."""
    if all(s.adapter is None for s in sequences):
        return {}
    return {"adapter_names": [s.adapter or BASE_ADAPTER for s in sequences]}


def _left_pad(tensor: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
