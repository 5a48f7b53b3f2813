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


class Embedder:
    """Unit vectors of texts (rows of a float32 array), by one call to the embedding model per check; the
    vectors of reference texts, which every check of a guardrail repeats, come from a bounded cache."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray], shared: Embedder | None = None) -> None:
        self._embed = embed
        # One cache for every caller: a vector depends on the text and the model only.
        self._cache: OrderedDict[str, np.ndarray] = shared._cache if shared else OrderedDict()
        self._lock = shared._lock if shared else threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.asarray(self._embed(texts), dtype=np.float32)

    def references(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        fresh = self(missing) if missing else None
        with self._lock:
            for i, text in enumerate(missing):
                self._cache[text] = fresh[i]
            vectors = []
            for text in texts:
                vector = self._cache.get(text)
                if vector is None:  # evicted by a concurrent check between the two locks: embed it again
                    vector = self([text])[0]
                self._cache[text] = vector
                self._cache.move_to_end(text)
                vectors.append(vector)
            while len(self._cache) > CACHED_REFERENCES:
                self._cache.popitem(last=False)
        return np.stack(vectors)
