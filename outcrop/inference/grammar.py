"""Constrained decoding: a grammar decides which tokens may come next, and sampling picks only among them.

A request that must produce a tool call or a JSON document carries a grammar (llguidance's Lark dialect,
with JSON schemas inlined as `%json {...}`) in its `SamplingParams`. Each of its sequences gets a matcher
that follows the tokens sampled so far; before every sampling step the matcher writes a bitmask of the
allowed next tokens, and the row's logits outside it become -inf. Constrained and free rows share one
batch: only the constrained rows are masked.

Why llguidance (measured on this machine by bench/tool_calls.py, SmolLM2's 49k vocabulary, five tool
schemas): xgrammar fills a row's mask in 0.004-0.016 ms and llguidance in 0.03-0.12 ms, both far below a
decode step (tens of ms), but xgrammar installs Triton (about 1 GB) and a TVM runtime with it, for a CPU
server that needs neither, while llguidance is one 8 MB wheel with no dependencies. Its Lark grammars
also say "free text until a tool call starts, then exactly the schema" directly (lazy lexemes), which
is what `toolChoice` auto needs.

Compiling is cached twice: the runtime caches the grammar text per tool set (runtime/tool_use.py), and
`Grammars` keeps a pristine matcher per grammar, so each new sequence starts from a copy (microseconds)
instead of a fresh compile.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import torch

#: Matchers kept compiled per model: distinct tool sets or schemas in recent use.
CACHED_GRAMMARS = 64


class GrammarError(ValueError):
    """The grammar (or the JSON schema inside it) cannot be compiled; the message says why."""


def check_grammar(grammar: str) -> None:
    """Compile `grammar` without a tokenizer, so a bad schema is refused before any model loads."""
    import llguidance

    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise GrammarError(_first_line(messages[0] if messages else "the grammar does not compile"))


def _first_line(message: str) -> str:
    """llguidance's errors go on to quote the whole grammar (schemas a caller may consider sensitive)."""
    return message.strip().splitlines()[0] if message.strip() else message


#: How a constrained JSON value is spaced: as json.dumps writes it, the spacing models saw most in
#: training, and no other whitespace. Free whitespace lets a weak model pad forever instead of closing.
JSON_SPACING = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


#: What lenient compiling adds: keywords the grammar cannot enforce are left to the model instead of
#: refused, and oneOf is read as anyOf.
LENIENT = {"lenient": True, "coerce_one_of": True}


def json_rule(schema: dict[str, Any], lenient: bool = False) -> str:
    """A Lark rule body (`%json {...}`) for one JSON value that validates against `schema` (with `lenient`,
    against what of it a grammar can enforce)."""
    import json

    options = {**JSON_SPACING, **(LENIENT if lenient else {})}
    return "%json " + json.dumps({**closed_objects(schema), "x-guidance": options})


#: Schema keywords whose values are schemas (or maps or lists of them), as opposed to data (enum, const,
#: default, examples), which `closed_objects` must not touch.
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMAS = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames")


#: Keywords that combine or extend an object's schema: an object next to one of them, or inside one of their
#: branches, is left as written (closing it could refuse properties another branch allows).
_COMBINED = ("allOf", "anyOf", "oneOf", "$ref", "if", "then", "else", "dependentSchemas", "unevaluatedProperties")


def closed_objects(schema: Any, closable: bool = True) -> Any:
    """`schema` with every object that lists its properties but says nothing of others closed to them
    (`additionalProperties: false`). Whatever the closed schema accepts, the caller's accepts too; it only
    stops a small model from inventing properties the caller never asked for (LangChain's and most tools'
    schemas leave objects open), each of which costs tokens and can loop. Objects combined with others
    (allOf, anyOf, $ref...) and objects that require a property they do not list stay open."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: closed_objects(sub) for name, sub in out[key].items()}
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [closed_objects(sub, closable=False) for sub in out[key]]
    for key in _SUBSCHEMAS:
        if isinstance(out.get(key), dict):
            out[key] = closed_objects(out[key], closable=key not in ("if", "then", "else", "not"))
    listed = out.get("properties")
    if (closable and isinstance(listed, dict) and "additionalProperties" not in out
            and "patternProperties" not in out and not any(k in out for k in _COMBINED)
            and set(out.get("required") or ()) <= set(listed)):
        out["additionalProperties"] = False
    return out


def json_schema_grammar(schema: dict[str, Any], lenient: bool = False) -> str:
    """The grammar of an answer that is one JSON document valid against `schema`."""
    return "%llguidance {}\nstart: " + json_rule(schema, lenient)


class Grammars:
    """One model's matchers: its tokenizer as llguidance sees it, and a cache of compiled grammars."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: frozenset[int]) -> None:
        self._hf_tokenizer = tokenizer
        self._vocab_size = max(vocab_size, len(tokenizer))
        self._eos = sorted(eos_ids) or None
        self._tokenizer = None  # built on first use: about 0.3 s for a 50k vocabulary
        self._pristine: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def matcher(self, grammar: str) -> Any:
        """A fresh matcher at the start of `grammar` (raises GrammarError if it does not compile)."""
        import llguidance
        import llguidance.hf

        with self._lock:
            if self._tokenizer is None:
                try:
                    self._tokenizer = llguidance.hf.from_tokenizer(self._hf_tokenizer, n_vocab=self._vocab_size,
                                                                   eos_token=self._eos)
                except ValueError as exc:  # a slow (Python) tokenizer: llguidance reads fast ones only
                    raise GrammarError(f"this model's tokenizer cannot be constrained: {exc}") from None
            pristine = self._pristine.get(grammar)
            if pristine is None:
                pristine = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0)
                if pristine.is_error():
                    raise GrammarError(_first_line(pristine.get_error()))
                self._pristine[grammar] = pristine
                while len(self._pristine) > CACHED_GRAMMARS:
                    self._pristine.popitem(last=False)
            else:
                self._pristine.move_to_end(grammar)
            return pristine.deep_copy()


    def mask(self, logits: torch.Tensor, rows: list[tuple[int, Any]]) -> None:
        """Set to -inf, in place, every logit a row's matcher does not allow next; `rows` pairs a row of
        `logits` with its matcher. One bitmask for all constrained rows, unpacked with plain tensor ops
        (llguidance's torch helpers import torch's compiler, seconds on the first constrained step, and
        apply the mask through torch.compile, which needs a C compiler at run time)."""
        import llguidance.numpy
        import numpy

        if not rows:
            return
        bitmask = llguidance.numpy.allocate_token_bitmask(len(rows), self._vocab_size)
        for slot, (_, matcher) in enumerate(rows):
            llguidance.numpy.fill_next_token_bitmask(matcher, bitmask, slot)
        # Bit j of word i is token 32 i + j: the words' bytes (little-endian) unpacked low bit first.
        bits = numpy.unpackbits(bitmask.astype("<i4").view(numpy.uint8), axis=1, bitorder="little")
        allowed = torch.from_numpy(bits.astype(bool))
        width = logits.shape[1]
        if allowed.shape[1] < width:  # logits beyond the tokenizer's vocabulary are never allowed
            allowed = torch.nn.functional.pad(allowed, (0, width - allowed.shape[1]))
        index = torch.tensor([row for row, _ in rows], device=logits.device)
        selected = logits.index_select(0, index)
        selected.masked_fill_(~allowed[:, :width].to(logits.device), float("-inf"))
        logits.index_copy_(0, index, selected)
