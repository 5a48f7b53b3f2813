"""What a guardrail's meaning-based policies share (denied topics, content filters, contextual grounding):
text cut into sentences, and those sentences' vectors from the catalog's embedding model
(all-MiniLM-L6-v2 unless `guardrail_embedding_model` names another), computed once per check.

A long text is judged sentence by sentence, not as one vector: one sentence on a denied topic inside a page
of harmless text must still be found, and an embedding of the whole page would average it away.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

#: A sentence: up to its end mark (or a line break). Bounded, so a text without end marks does not make one
#: unbounded sentence: longer runs are cut in windows of WINDOW_WORDS words.
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*|[.!?]+")
WINDOW_WORDS = 48
#: Reference texts (topic definitions and examples) whose vectors are kept, across requests.
CACHED_REFERENCES = 4096


def sentences(text: str) -> list[str]:
    """The sentences of `text` (stripped, none empty), each at most WINDOW_WORDS words."""
    out = []
    for match in _SENTENCE.finditer(text):
        words = match.group(0).split()
        if not any(c.isalnum() for c in match.group(0)):
            continue
        out += [" ".join(words[i:i + WINDOW_WORDS]) for i in range(0, len(words), WINDOW_WORDS)]
    return out


class ReferenceCache:
    """The vectors of reference texts (topic definitions and examples), which every check of a guardrail
    repeats: bounded, least recently used first out, shared by every caller (a vector depends on the text and
    the model only)."""

    def __init__(self, size: int = CACHED_REFERENCES) -> None:
        self.size = size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def known(self, texts: list[str]) -> dict[str, np.ndarray]:
        with self._lock:
            found = {t: self._vectors[t] for t in texts if t in self._vectors}
            for text in found:
                self._vectors.move_to_end(text)
        return found

    def add(self, vectors: dict[str, np.ndarray]) -> None:
        with self._lock:
            self._vectors.update(vectors)
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)


class Embedder:
    """Unit vectors of texts (rows of a float32 array), by one call to the embedding model per check; the
    vectors of reference texts come from `cache` when it holds them."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray], cache: ReferenceCache | None = None) -> None:
        self._embed = embed
        self.cache = cache if cache is not None else ReferenceCache()

    def __call__(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.asarray(self._embed(texts), dtype=np.float32)

    def references(self, texts: list[str]) -> np.ndarray:
        vectors = self.cache.known(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in vectors))
        if missing:
            fresh = dict(zip(missing, self(missing), strict=True))
            self.cache.add(fresh)
            vectors.update(fresh)
        return np.stack([vectors[t] for t in texts])
