"""Denied topics: a text is on a topic when one of its sentences means nearly what the topic's definition, or
one of its examples, says: the cosine of their vectors (semantic.py) reaches TOPIC_SIMILARITY.

The threshold was calibrated with bench/guardrails.py on public questions (SQuAD 2.0 articles as topics,
Natural Questions as questions off every topic): see the README's Guardrails section for its precision and
recall. Examples sharpen a topic a lot; a definition alone catches less.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from outcrop.guardrails.semantic import Embedder

#: The cosine at and above which a sentence is on a topic.
TOPIC_SIMILARITY = 0.4


def references(topic: dict[str, Any]) -> list[str]:
    """What a topic is compared against: its definition and its examples."""
    return [topic["definition"], *(topic.get("examples") or [])]


def similarities(embedder: Embedder, topics: list[dict[str, Any]], vectors: np.ndarray) -> list[float]:
    """For each topic, the highest cosine between one of the text's sentence `vectors` and one of the
    topic's references (0 when there is no sentence)."""
    if not topics or not len(vectors):
        return [0.0] * len(topics)
    texts = [r for t in topics for r in references(t)]
    cosines = vectors @ embedder.references(texts).T  # sentences x references, unit vectors
    out, at = [], 0
    for topic in topics:
        count = len(references(topic))
        out.append(float(cosines[:, at:at + count].max()))
        at += count
    return out
