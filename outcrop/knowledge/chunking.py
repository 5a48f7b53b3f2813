"""Bedrock's chunking strategies: a document's text cut into the pieces that are embedded and retrieved.

The configuration is Bedrock's `ChunkingConfiguration` as boto3 sends it, and sizes are counted in the
tokens of the knowledge base's embedding model (its Hugging Face fast tokenizer), as Bedrock counts them.
Every chunk is an exact, whitespace-trimmed substring of the document: cuts fall on token boundaries found
through the tokenizer's offsets, so no text is rewritten (which retrieval results and citations rely on).

- FIXED_SIZE: windows of `maxTokens` overlapping by `overlapPercentage`; a window ends at a sentence end
  (or else a word end) when one lies in its last fifth, so that chunks rarely stop mid-sentence.
- NONE: the whole document is one chunk.
- HIERARCHICAL: parent windows, each cut into overlapping child windows; the child is embedded and
  searched, its parent is what retrieval returns (`Chunk.context`), for more context than a match.
- SEMANTIC: sentences grouped with their neighbours are embedded; a chunk ends where the meaning jumps
  (the distance between neighbouring groups is above a percentile of all of them), then any chunk over
  `maxTokens` is cut as FIXED_SIZE without overlap.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from outcrop.errors import ValidationException

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Chunk:
    #: What is embedded and full-text indexed.
    text: str
    #: What retrieval returns: the parent chunk for HIERARCHICAL, else the same as `text`.
    context: str


#: Bedrock's default when a data source names no chunking configuration.
DEFAULT_CHUNKING = {"chunkingStrategy": "FIXED_SIZE",
                    "fixedSizeChunkingConfiguration": {"maxTokens": 300, "overlapPercentage": 20}}

STRATEGIES = ("FIXED_SIZE", "NONE", "HIERARCHICAL", "SEMANTIC")


def default_for(window: int) -> dict:
    """Bedrock's default chunking, its chunks cut to fit an embedding model whose window is smaller than
    300 tokens (MiniLM's is 256): a chunk is embedded whole or its tail is never found."""
    size = min(DEFAULT_CHUNKING["fixedSizeChunkingConfiguration"]["maxTokens"], window)
    return {"chunkingStrategy": "FIXED_SIZE", "fixedSizeChunkingConfiguration": {"maxTokens": size,
                                                                                 "overlapPercentage": 20}}


def embedded_tokens(config: dict | None) -> int | None:
    """The most tokens one embedded chunk holds under `config` (a hierarchical chunk's child is what is
    embedded), or None for NONE, whose chunk is the whole document."""
    strategy = (config or DEFAULT_CHUNKING)["chunkingStrategy"]
    if strategy == "NONE":
        return None
    if strategy == "HIERARCHICAL":
        return config["hierarchicalChunkingConfiguration"]["levelConfigurations"][-1]["maxTokens"]
    return (config or DEFAULT_CHUNKING)[_MEMBERS[strategy]]["maxTokens"]
#: The member each strategy requires; the others' members are refused with it.
_MEMBERS = {"FIXED_SIZE": "fixedSizeChunkingConfiguration", "HIERARCHICAL": "hierarchicalChunkingConfiguration",
            "SEMANTIC": "semanticChunkingConfiguration"}
#: botocore's bedrock-agent model: the largest maxTokens of any level.
MAX_TOKENS = 8192

_PREFIX = "chunkingConfiguration"

#: (start, end) character offsets of a token in the text.
Offsets = Sequence[tuple[int, int]]


# -- Configuration ---------------------------------------------------------------------------------------


def check_config(config: dict | None) -> None:
    """Refuse, as Bedrock does, a configuration that is incomplete, out of range or mixes strategies."""
    if config is None:
        return
    if not isinstance(config, dict):
        raise ValidationException(f"{_PREFIX} must be an object")
    strategy = config.get("chunkingStrategy")
    if strategy is None:
        raise ValidationException(f"{_PREFIX}.chunkingStrategy is required")
    if strategy not in STRATEGIES:
        raise ValidationException(
            f"{_PREFIX}.chunkingStrategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    for other_strategy, member in _MEMBERS.items():
        if other_strategy != strategy and config.get(member) is not None:
            raise ValidationException(f"{_PREFIX}.{member} is not allowed when chunkingStrategy is {strategy}")
    if strategy == "NONE":
        return
    member = _MEMBERS[strategy]
    settings = config.get(member)
    if settings is None:
        raise ValidationException(f"{_PREFIX}.{member} is required when chunkingStrategy is {strategy}")
    if not isinstance(settings, dict):
        raise ValidationException(f"{_PREFIX}.{member} must be an object")
    {"FIXED_SIZE": _check_fixed, "HIERARCHICAL": _check_hierarchical, "SEMANTIC": _check_semantic}[strategy](
        settings, f"{_PREFIX}.{member}")


def _check_fixed(settings: dict, path: str) -> None:
    _integer(settings, "maxTokens", path, 1, MAX_TOKENS)
    _integer(settings, "overlapPercentage", path, 1, 99)


def _check_hierarchical(settings: dict, path: str) -> None:
    levels = settings.get("levelConfigurations")
    if levels is None:
        raise ValidationException(f"{path}.levelConfigurations is required")
    if not isinstance(levels, list) or len(levels) != 2:
        raise ValidationException(
            f"{path}.levelConfigurations must list exactly two levels: the parent, then the child")
    for index, level in enumerate(levels):
        if not isinstance(level, dict):
            raise ValidationException(f"{path}.levelConfigurations[{index}] must be an object")
        _integer(level, "maxTokens", f"{path}.levelConfigurations[{index}]", 1, MAX_TOKENS)
    if levels[1]["maxTokens"] > levels[0]["maxTokens"]:
        raise ValidationException(f"{path}.levelConfigurations[1].maxTokens (the child level) must not exceed "
                                  f"levelConfigurations[0].maxTokens (the parent level)")
    _integer(settings, "overlapTokens", path, 1, None)


def _check_semantic(settings: dict, path: str) -> None:
    _integer(settings, "maxTokens", path, 1, MAX_TOKENS)
    _integer(settings, "bufferSize", path, 0, 1)
    _integer(settings, "breakpointPercentileThreshold", path, 50, 99)


def _integer(settings: dict, name: str, path: str, low: int, high: int | None) -> None:
    value = settings.get(name)
    if value is None:
        raise ValidationException(f"{path}.{name} is required")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationException(f"{path}.{name} must be an integer")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValidationException(f"{path}.{name} must be {bounds}, not {value}")


# -- Splitting -------------------------------------------------------------------------------------------


def split(text: str, config: dict | None, tokenizer,
          embed: Callable[[list[str]], np.ndarray] | None = None) -> list[Chunk]:
    """The chunks of `text` under `config` (None: Bedrock's default); `embed` is needed for SEMANTIC only."""
    check_config(config)
    config = config or DEFAULT_CHUNKING
    strategy = config["chunkingStrategy"]
    if strategy == "SEMANTIC" and embed is None:
        raise ValueError("SEMANTIC chunking needs an embed function")
    if not text.strip():
        return []
    if strategy == "NONE":
        return [Chunk(text.strip(), text.strip())]
    offsets = _offsets(text, tokenizer)
    if strategy == "FIXED_SIZE":
        settings = config["fixedSizeChunkingConfiguration"]
        size = settings["maxTokens"]
        overlap = round(size * settings["overlapPercentage"] / 100)
        return [_chunk(text, offsets, window) for window in _windows(text, offsets, 0, len(offsets), size, overlap)]
    if strategy == "HIERARCHICAL":
        return _hierarchical(text, offsets, config["hierarchicalChunkingConfiguration"])
    return _semantic(text, offsets, config["semanticChunkingConfiguration"], embed)


def _offsets(text: str, tokenizer) -> list[tuple[int, int]]:
    # verbose=False: a document is longer than the model's input on purpose; that is what chunking is for.
    encoding = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False, verbose=False)
    # Some tokenizers give zero-width offsets to tokens they insert; they cover no text and count for nothing.
    return [(start, end) for start, end in encoding["offset_mapping"] if end > start]


def _chunk(text: str, offsets: Offsets, window: tuple[int, int], context: str | None = None) -> Chunk:
    piece = _span_text(text, offsets, window)
    return Chunk(piece, piece if context is None else context)


def _span_text(text: str, offsets: Offsets, window: tuple[int, int]) -> str:
    start, end = window
    return text[offsets[start][0]:offsets[end - 1][1]].strip()


def _windows(text: str, offsets: Offsets, start: int, stop: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Token windows (start, end) over tokens [start, stop): at most `size` tokens, the next one beginning
    `overlap` tokens before the previous one ends. Windows always move forward, whatever the overlap."""
    windows = []
    while start < stop:
        end = _window_end(text, offsets, start, stop, size, overlap)
        windows.append((start, end))
        if end >= stop:
            break
        start = max(end - overlap, start + 1)
    return windows


def _window_end(text: str, offsets: Offsets, start: int, stop: int, size: int, overlap: int) -> int:
    """Where a window from `start` ends: `size` tokens on, or earlier at the last sentence end (else word end)
    in its last fifth. The earliest end allowed still leaves the next window beginning after this one."""
    end = start + size
    if end >= stop:
        return stop
    # In integers (ceil of 4/5 of the size): a float product could land a token either side.
    earliest = max(start + (4 * size + 4) // 5, start + overlap + 1)
    candidates = range(end, earliest - 1, -1)
    for is_break in (_sentence_break, _word_break):
        for candidate in candidates:
            if is_break(text, offsets, candidate):
                return candidate
    return end


_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*$")


def _sentence_break(text: str, offsets: Offsets, boundary: int) -> bool:
    """True when the text between token boundary-1 and token boundary ends a sentence or a line."""
    before, after = offsets[boundary - 1][1], offsets[boundary][0]
    gap = text[before:after]
    return "\n" in gap or (gap[:1].isspace() and _SENTENCE_END.search(text[max(0, before - 4):before]) is not None)


def _word_break(text: str, offsets: Offsets, boundary: int) -> bool:
    return offsets[boundary][0] > offsets[boundary - 1][1]


# - HIERARCHICAL


def _hierarchical(text: str, offsets: Offsets, settings: dict) -> list[Chunk]:
    parent_size, child_size = (level["maxTokens"] for level in settings["levelConfigurations"])
    overlap = settings["overlapTokens"]
    chunks = []
    # Parents do not overlap one another: a child in two parents would be stored, and found, twice.
    for parent in _windows(text, offsets, 0, len(offsets), parent_size, 0):
        context = _span_text(text, offsets, parent)
        chunks.extend(_chunk(text, offsets, child, context)
                      for child in _windows(text, offsets, *parent, child_size, overlap))
    return chunks


# - SEMANTIC

#: A sentence ends after . ! or ? (and any closing quotes or brackets) before a space, or at a line end.
_SENTENCE_BOUNDARY = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s)|\n")


def _sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences, each trimmed of surrounding whitespace."""
    spans, start = [], 0
    for match in _SENTENCE_BOUNDARY.finditer(text):
        spans.append((start, match.end()))
        start = match.end()
    spans.append((start, len(text)))
    trimmed = []
    for start, end in spans:
        piece = text[start:end]
        if piece.strip():
            start += len(piece) - len(piece.lstrip())
            trimmed.append((start, start + len(piece.strip())))
    return trimmed


def _semantic(text: str, offsets: Offsets, settings: dict, embed: Callable[[list[str]], np.ndarray]) -> list[Chunk]:
    sentences = _sentences(text)
    groups = _semantic_groups(text, sentences, settings, embed) if len(sentences) > 1 else [sentences]
    starts = [start for start, _ in offsets]
    chunks = []
    for group in groups:
        begin, end = group[0][0], group[-1][1]
        # A token belongs to the sentence its first character is in.
        first, stop = bisect.bisect_left(starts, begin), bisect.bisect_left(starts, end)
        if stop - first <= settings["maxTokens"]:
            chunks.append(Chunk(text[begin:end], text[begin:end]))
        else:
            chunks.extend(_chunk(text, offsets, window)
                          for window in _windows(text, offsets, first, stop, settings["maxTokens"], 0))
    return [chunk for chunk in chunks if chunk.text]


def _semantic_groups(text: str, sentences: list[tuple[int, int]], settings: dict,
                     embed: Callable[[list[str]], np.ndarray]) -> list[list[tuple[int, int]]]:
    """The sentences in runs that stay on one topic, cut where neighbouring groups are least alike."""
    import numpy as np

    buffer = settings["bufferSize"]
    last = len(sentences) - 1
    # Each sentence with `buffer` neighbours each side: one sentence alone is too little to embed reliably.
    windows = [text[sentences[max(0, i - buffer)][0]:sentences[min(last, i + buffer)][1]] for i in range(last + 1)]
    vectors = np.asarray(embed(windows), dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1)
    vectors = vectors / np.where(norms > 0, norms, 1.0)[:, None]
    distances = 1.0 - np.sum(vectors[:-1] * vectors[1:], axis=1)
    threshold = np.percentile(distances, settings["breakpointPercentileThreshold"])
    groups, current = [], [sentences[0]]
    for sentence, distance in zip(sentences[1:], distances, strict=True):
        if distance > threshold:
            groups.append(current)
            current = []
        current.append(sentence)
    groups.append(current)
    return groups
