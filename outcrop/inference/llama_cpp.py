"""GGUF models on llama.cpp, batched continuously: many sequences in one `llama_decode`, as llama.cpp's server does.

`llama-cpp-python`'s low-level API (the C functions, not its `Llama` class, which runs one sequence) gives
one context with a KV cache shared by up to `max_batch` sequences, each under its own sequence id. The
scheduler is `inference/scheduler.py`'s: the queue, admission, cancellation, throttling, sampling (the same
`sample_batch`, seeds and grammar masks over llama.cpp's logits) and `emit` (stop sequences, exact token
budgets) are that one loop's; this module supplies the model steps. A prefill decodes the newcomers' prompts
(every token, logits for the last one of each); a decode step feeds every running sequence its last token.
A sequence that leaves has its cells removed at once, so its room serves the next newcomer.

Tokens are the transformers tokenizer's, read from the same GGUF file: the runtime renders chat templates and
counts tokens with it whatever the engine, and its ids are the GGUF vocabulary's. llama.cpp is optional
(`pip install outcrop[llama]`, built from source); `available()` says whether it is installed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from outcrop.inference.loader import CAUSAL, LoadedModel, converted_gguf_dir
from outcrop.inference.scheduler import Scheduler, _Sequence

log = logging.getLogger(__name__)

#: Engine names (Settings.engine): "auto" runs GGUF files on llama.cpp when it is installed.
AUTO, LLAMA_CPP = "auto", "llama.cpp"
#: KV cells shared by all sequences of one model (each still bounded by the model's own context window):
#: 32k cells hold 16 conversations of 2k tokens; SmolLM2-135M's f16 cache for them is about 700 MB.
DEFAULT_KV_CELLS = 32_768
#: Prompt tokens one prefill step takes past what the newcomers share (at least one whole prompt): a crowd arriving
#: at once is prefilled a few at a time, each group's first tokens streaming out before the next group's prefill,
#: instead of every client waiting for all of them. On a CPU a prefill is compute-bound already at this size, so
#: little is lost: measured here with 16 SmolLM2 clients, 64 gave a time to first token p50 of 0.29-0.33 s at
#: 222-233 tokens/s, 128 gave 0.40-0.42 s at 237.
PREFILL_TOKENS = 64
#: Tokens one llama_decode takes at most; longer prefills go in several calls.
DECODE_BATCH = 2048
#: The shortest common prompt prefix worth sharing between sequences (shorter ones are prefilled again).
MIN_SHARED_TOKENS = 8
#: llama.cpp's most sequences in one context (LLAMA_MAX_SEQ in its llama-cparams.h, not exported).
LLAMA_MAX_SEQ = 256
#: One pool of cells for every sequence, each as long as it needs: measured faster here than a stream per sequence
#: (each padded to its share of the cells).
KV_UNIFIED = True


#: ggml's log levels (ggml.h): llama.cpp reports every tensor it loads at the lower ones.
_GGML_WARN, _GGML_ERROR = 3, 4
_log_callback = None  # kept referenced: llama.cpp calls it for as long as the process lives


def _route_logs() -> None:
    """llama.cpp's own log lines into this process's logging, warnings and errors only (it writes hundreds of lines
    to stderr for each model it loads otherwise)."""
    global _log_callback
    import llama_cpp as ll

    if _log_callback is None:
        def forward(level: int, text: bytes, _user_data) -> None:
            if level in (_GGML_WARN, _GGML_ERROR) and text:
                log.log(logging.WARNING if level == _GGML_WARN else logging.ERROR, "llama.cpp: %s",
                        text.decode(errors="replace").rstrip())

        _log_callback = ll.llama_log_callback(forward)
        ll.llama_log_set(_log_callback, ctypes.c_void_p())


def available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except (ImportError, OSError):  # not installed, or its shared library does not load on this CPU
        return False
    return True


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` have in common (binary search over list slices: compared in C)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def gguf_tokenizer(gguf: Path, cache_dir: Path):
    """The transformers tokenizer of a GGUF file: the converted folder's when there is one, else read from the
    file once (its vocabulary and chat template, not its weights) and kept in the model cache."""
    from transformers import AutoTokenizer

    converted = converted_gguf_dir(gguf, cache_dir)
    if (converted / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(converted)
    target = converted.with_name(converted.name + "-tokenizer")
    if (target / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=target.parent))
    tokenizer.save_pretrained(staging)
    try:
        os.replace(staging, target)
    except OSError:  # another process saved it first
        shutil.rmtree(staging, ignore_errors=True)
    return tokenizer


@dataclass
class LlamaModel:
    """A loaded GGUF file and its context (freed when the deployment closes): `max_sequences` sequence ids for
    requests, and the one after them for a cached prefix."""

    model: ctypes.c_void_p
    context: ctypes.c_void_p
    vocab: ctypes.c_void_p
    n_vocab: int
    kv_cells: int
    max_sequences: int

    @property
    def config(self):
        """What the grammar compiler reads from a model's config (transformers models have one)."""
        return SimpleNamespace(vocab_size=self.n_vocab)

    def decode(self, rows: list[tuple[int, list[int], int]],
               riders: dict[int, list[tuple[int, int]]] | None = None) -> torch.Tensor:
        """Feed each (sequence id, tokens, first position) row; the logits after each row's last token, [rows,
        vocab], in row order. `riders` maps a row's index to other sequences that own that row's first tokens
        too, as (sequence id, up to position): a prompt prefix they share is computed once, its cells theirs as
        well. Several llama_decode calls when the rows hold more than DECODE_BATCH tokens."""
        import llama_cpp as ll

        if not self.context:
            raise RuntimeError("the model was unloaded")
        riders = riders or {}
        entries = [(token, start + i, [seq, *(other for other, end in riders.get(row, ()) if start + i < end)],
                    i == len(tokens) - 1)
                   for row, (seq, tokens, start) in enumerate(rows) for i, token in enumerate(tokens)]
        logits = torch.empty((len(rows), self.n_vocab), dtype=torch.float32)
        done = 0
        for first in range(0, len(entries), DECODE_BATCH):
            chunk = entries[first:first + DECODE_BATCH]
            batch = ll.llama_batch_init(len(chunk), 0, self.max_sequences + 1)
            try:
                for i, (token, position, seq_ids, wanted) in enumerate(chunk):
                    batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, len(seq_ids)
                    for j, seq in enumerate(seq_ids):
                        batch.seq_id[i][j] = seq
                    batch.logits[i] = wanted
                batch.n_tokens = len(chunk)
                status = ll.llama_decode(self.context, batch)
                if status != 0:
                    raise RuntimeError("llama.cpp found no room in its KV cache for this batch" if status == 1
                                       else f"llama_decode failed ({status})")
                wanted = sum(1 for entry in chunk if entry[3])
                if wanted:  # stored contiguously, in batch order: one copy for every row of the chunk
                    out = np.ctypeslib.as_array(ll.llama_get_logits(self.context), shape=(wanted, self.n_vocab))
                    logits[done:done + wanted] = torch.from_numpy(out)
                    done += wanted
            finally:
                ll.llama_batch_free(batch)
        return logits

    def share(self, source: int, target: int, tokens: int) -> None:
        """Give sequence `target` the cells of `source`'s first `tokens` positions (a shared prompt prefix): in
        llama.cpp's unified cache the cells are tagged with both ids, not copied."""
        import llama_cpp as ll

        ll.llama_memory_seq_cp(ll.llama_get_memory(self.context), source, target, 0, tokens)

    def forget(self, sequence_id: int) -> None:
        """Free a sequence's KV cells (it left the batch)."""
        import llama_cpp as ll

        ll.llama_memory_seq_rm(ll.llama_get_memory(self.context), sequence_id, -1, -1)

    def close(self) -> None:
        import llama_cpp as ll

        if self.context:
            ll.llama_free(self.context)
            self.context = None
        if self.model:
            ll.llama_model_free(self.model)
            self.model = None


#: Models with fewer parameters than this run from an F16 copy of their GGUF file, made once in the model cache.
#: llama.cpp multiplies quantized weights with activations quantized to 8 bits, and small models do not survive
#: it: SmolLM2-135M's Q4_1 file (and a Q8_0 copy of it) answers "What is the capital of France?" with French
#: word salad, its F16 and F32 copies with "Paris" (as transformers does, dequantizing the same file). F16 costs
#: such a model a few hundred MB, and on a CPU its batched decode is faster than Q4_1's (measured here: 229 against
#: 149 tokens/s for 16 sequences).
F16_BELOW_PARAMETERS = 1_000_000_000
_FLOAT_TYPES = ("F32", "F16", "BF16")


def f16_copy(gguf_file: Path, cache_dir: Path) -> Path:
    """`gguf_file` itself when its weights are floats or it is a large model; else its F16 copy, written once
    (atomically) under the model cache with the same metadata and every matrix dequantized to F16."""
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, quants

    reader = GGUFReader(str(gguf_file))
    if all(t.tensor_type.name in _FLOAT_TYPES for t in reader.tensors) or \
            sum(int(t.n_elements) for t in reader.tensors) >= F16_BELOW_PARAMETERS:
        return gguf_file
    converted = converted_gguf_dir(gguf_file, cache_dir)  # named by the file's size and time: a new file, a new copy
    target = converted.with_name(converted.name + ".f16.gguf")
    if target.is_file():
        return target
    log.info("writing an F16 copy of %s for llama.cpp in %s (once)", gguf_file, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    writer = GGUFWriter(str(staging), reader.fields["general.architecture"].contents())
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # the writer writes these itself
        if name == "general.file_type":
            writer.add_uint32(name, 1)  # LLAMA_FTYPE_MOSTLY_F16
        elif field.types[0] == GGUFValueType.ARRAY:
            writer.add_array(name, field.contents())
        else:
            writer.add_key_value(name, field.contents(), field.types[0])
    for tensor in reader.tensors:
        data = quants.dequantize(tensor.data, tensor.tensor_type).reshape([int(n) for n in reversed(tensor.shape)])
        matrix = data.ndim == 2  # norms and biases stay F32, as llama.cpp's own converter keeps them
        writer.add_tensor(tensor.name, data.astype(np.float16 if matrix else np.float32),
                          raw_dtype=GGMLQuantizationType.F16 if matrix else GGMLQuantizationType.F32)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    return target


def load_gguf(path: Path, cache_dir: Path, max_sequences: int, kv_cells: int = DEFAULT_KV_CELLS,
              threads: int | None = None) -> LoadedModel:
    """A GGUF file on llama.cpp (CPU), with a context for `max_sequences` sequences sharing `kv_cells` cells; a
    small quantized model from its F16 copy (`f16_copy`). Tokens are still read from `path`."""
    import llama_cpp as ll

    _route_logs()
    ll.llama_backend_init()
    model_params = ll.llama_model_default_params()
    model_params.n_gpu_layers = 0
    weights = f16_copy(path, cache_dir)
    model = ll.llama_model_load_from_file(str(weights).encode(), model_params)
    if not model:
        raise ValueError(f"llama.cpp could not load {path}")
    vocab = ll.llama_model_get_vocab(model)
    n_vocab = ll.llama_vocab_n_tokens(vocab)
    context_length = ll.llama_model_n_ctx_train(model)
    params = ll.llama_context_default_params()
    params.n_ctx = kv_cells  # every sequence shares them; one sequence is bounded by the model's window too
    params.n_batch = params.n_ubatch = DECODE_BATCH
    max_sequences = min(max_sequences, LLAMA_MAX_SEQ - 1)
    params.n_seq_max = max_sequences + 1  # and one more for the prefix kept between requests (LlamaCppScheduler)
    params.kv_unified = KV_UNIFIED
    # The same share of the cores as torch's (Settings.torch_threads): servers sharing a machine split it.
    params.n_threads = params.n_threads_batch = threads or torch.get_num_threads()
    params.no_perf = True
    context = ll.llama_init_from_model(model, params)
    if not context:
        ll.llama_model_free(model)
        raise ValueError(f"llama.cpp could not make a context for {path} ({params.n_ctx} cells)")
    llama = LlamaModel(model, context, vocab, n_vocab, ll.llama_n_ctx(context), max_sequences)
    try:
        tokenizer = gguf_tokenizer(path, cache_dir)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        eos = frozenset(t for t in range(n_vocab) if ll.llama_vocab_is_eog(vocab, t))
    except BaseException:
        llama.close()
        raise
    # The KV cache is most of what the model holds beyond its weights (f16 keys and values, every layer and cell):
    # counted, so that the engine's memory budget sees it.
    head = ll.llama_model_n_embd(model) // max(1, ll.llama_model_n_head(model))
    kv_bytes = llama.kv_cells * ll.llama_model_n_layer(model) * 2 * ll.llama_model_n_head_kv(model) * head * 2
    return LoadedModel(CAUSAL, llama, tokenizer, torch.device("cpu"), min(context_length, llama.kv_cells), eos,
                       nbytes=weights.stat().st_size + kv_bytes, extra={"engine": LLAMA_CPP, "weights": weights})


class LlamaCppScheduler(Scheduler):
    """The continuous-batching scheduler over a llama.cpp context: each running sequence is a sequence id in
    the shared KV cache, admitted while the cache has room for its prompt and its whole token budget.

    A step that admits newcomers also decodes the running sequences (one llama_decode for both, as llama.cpp's
    server does), so a crowd's prefill never stalls the streams already going. And prompts share their common
    prefix (a chat template's system prompt, a conversation's earlier turns): a newcomer takes the cells of the
    longest prefix it has in common with a running sequence, with the prefix kept from earlier requests, or with
    another newcomer of the same step, and prefills only the rest."""

    def __init__(self, loaded: LoadedModel, max_batch: int = 16, max_queue_wait_s: float | None = None) -> None:
        self.llama: LlamaModel = loaded.model
        self._free = list(range(min(max_batch, self.llama.max_sequences)))
        self._ids: dict[int, int] = {}  # id(sequence) -> its sequence id in the KV cache
        # The kept prefix lives under a sequence id of its own (the one past the batch's), so that its cells outlive
        # the requests that made them. Until two prompts have shared it, it is the latest whole prompt.
        self._keep_id = self.llama.max_sequences
        self._kept: list[int] = []
        self._kept_shared = False
        self._kept_dropped = False  # given up for room: its cells are freed at the next step
        super().__init__(loaded, min(max_batch, self.llama.max_sequences), max_queue_wait_s)

    def _budget(self, sequence: _Sequence) -> int:
        """The cells a sequence may come to hold: its prompt and every token it may generate."""
        return min(len(sequence.prompt_ids) + sequence.params.max_tokens, self.loaded.context_length)

    def _fits(self, sequence: _Sequence, admitted: list[_Sequence]) -> bool:
        if admitted:
            newcomers = [*admitted, sequence]
            fed = sum(len(s.prompt_ids) - shared for s, (shared, _, _) in zip(newcomers, self._plan(newcomers),
                                                                              strict=True))
            if fed > PREFILL_TOKENS:
                return False  # the rest prefill next step: the first ones' first tokens go out meanwhile
        held = sum(self._budget(s) for s in [*self._running, *admitted, sequence])
        if held + len(self._kept) <= self.llama.kv_cells:
            return True
        if self._kept and (held <= self.llama.kv_cells or not (self._running or admitted)):
            self._kept, self._kept_dropped = [], True  # requests before a cached prefix
            return True
        # Alone, it either fits or fails with the cache's own error.
        return not (self._running or admitted)

    def _plan(self, admitted: list[_Sequence]) -> list[tuple[int, int | None, int | None]]:
        """For each newcomer: how many prompt tokens it shares, and with whom: the sequence id whose cells it takes
        (a running sequence or the kept prefix), and/or the index of an earlier newcomer of this step whose prefill
        it rides on. A rider on a newcomer that itself took its first cells from a sequence takes those from the
        same sequence, and the rest of what they share from the newcomer's prefill."""
        sources = [(self._ids[id(s)], s.prompt_ids) for s in self._running]
        if self._kept:
            sources.append((self._keep_id, self._kept))
        plan: list[tuple[int, int | None, int | None]] = []
        for k, sequence in enumerate(admitted):
            prompt = sequence.prompt_ids
            limit = len(prompt) - 1  # its last token is always fed: its logits choose the first token
            best: tuple[int, int | None, int | None] = (0, None, None)
            for seq_id, tokens in sources:
                shared = min(common_prefix(tokens, prompt), limit)
                if shared > best[0]:
                    best = (shared, seq_id, None)
            for j in range(k):
                taken, source, ride = plan[j]
                if ride is None:  # rides only on one that prefills its own row (from `taken` on)
                    shared = min(common_prefix(admitted[j].prompt_ids, prompt), limit)
                    if shared > max(best[0], taken):
                        best = (shared, source, j)
            plan.append(best if best[0] >= MIN_SHARED_TOKENS else (0, None, None))
        return plan

    def _merge_supported(self) -> bool:
        return True

    def _prefill(self, admitted: list[_Sequence]) -> None:
        if self._kept_dropped:
            self.llama.forget(self._keep_id)
            self._kept_dropped = False
        if not self._running:  # a fresh batch (or one after a failed step): every id is free, the kept prefix stays
            for seq_id in range(self.max_batch):
                self.llama.forget(seq_id)
            self._free = list(range(self.max_batch))
            self._ids.clear()
            self._last = torch.zeros(0, dtype=torch.long)
            self._positions = torch.zeros(0, dtype=torch.long)
        plan = self._plan(admitted)
        for sequence in admitted:
            self._ids[id(sequence)] = self._free.pop()
        # The running sequences' next tokens, then the newcomers' prompts past what they share.
        rows = [(self._ids[id(s)], [int(token)], int(position))
                for s, token, position in zip(self._running, self._last, self._positions, strict=True)]
        riders: dict[int, list[tuple[int, int]]] = {}
        for sequence, (shared, source, ride) in zip(admitted, plan, strict=True):
            seq_id = self._ids[id(sequence)]
            # The cells another sequence holds already; then those the newcomer it rides on prefills now.
            if source is not None:
                self.llama.share(source, seq_id, shared if ride is None else plan[ride][0])
            if ride is not None:
                riders.setdefault(len(self._running) + ride, []).append((seq_id, shared))
            rows.append((seq_id, sequence.prompt_ids[shared:], shared))
        logits = self.llama.decode(rows, riders)
        self._keep(admitted, plan)
        self._running = [*self._running, *admitted]
        self._last = torch.cat([self._last, torch.zeros(len(admitted), dtype=torch.long)])
        self._positions = torch.cat([self._positions,
                                     torch.tensor([len(s.prompt_ids) - 1 for s in admitted], dtype=torch.long)])
        self._advance(logits, start=0)

    def _keep(self, admitted: list[_Sequence], plan: list[tuple[int, int | None, int | None]]) -> None:
        """Keep a prefix for later requests (before any newcomer leaves and frees its cells): the longest one two
        prompts have been seen to share, or, while none has, the latest prompt."""
        for sequence, (shared, _, _) in zip(admitted, plan, strict=True):
            prompt = sequence.prompt_ids
            if shared and (not self._kept_shared or shared > common_prefix(self._kept, prompt)):
                tokens, self._kept_shared = prompt[:shared], True
            elif not shared and not self._kept_shared:
                tokens = prompt
            else:
                continue
            held = sum(self._budget(s) for s in [*self._running, *admitted])
            if held + len(tokens) > self.llama.kv_cells:
                continue  # the requests' room comes first
            self.llama.forget(self._keep_id)
            self.llama.share(self._ids[id(sequence)], self._keep_id, len(tokens))
            self._kept = list(tokens)

    def _decode(self) -> None:
        rows = [(self._ids[id(s)], [int(token)], int(position))
                for s, token, position in zip(self._running, self._last, self._positions, strict=True)]
        self._advance(self.llama.decode(rows), start=0)

    def _retain(self, keep: list[int]) -> None:
        kept = set(keep)
        for index, sequence in enumerate(self._running):
            if index not in kept:
                seq_id = self._ids.pop(id(sequence))
                self.llama.forget(seq_id)
                self._free.append(seq_id)
        self._running = [self._running[i] for i in keep]
        index = torch.tensor(keep, dtype=torch.long)
        self._last, self._positions = self._last[index], self._positions[index]

    def _loop(self) -> None:
        try:
            super()._loop()
        finally:  # the worker owns the context: it frees it once it has stopped using it (close() asked it to stop)
            self.llama.close()

    def close(self) -> None:
        super().close()
        if not self._thread.is_alive():  # else the worker frees it when its step ends: never under a running step
            self.llama.close()
