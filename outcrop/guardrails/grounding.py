"""Contextual grounding checks: is an answer supported by its sources (GROUNDING), and does it answer the
question (RELEVANCE)? Scores in [0, 1]; a filter intervenes when its score is below its threshold.

Embedding-based (no NLI model installs offline): the answer is cut into sentences, and
- GROUNDING is its least supported sentence's support: the sentence's highest cosine with a source sentence,
  times the square of the share of its specifics (numbers, and capitalised words past the sentence's first)
  that appear in the sources. Cosine alone misses a changed figure or name ("the fee is $20" against "the fee is $15"
  is a near neighbour); the specifics catch what a paraphrase must keep.
- RELEVANCE is the highest cosine of an answer sentence with the query, over RELEVANT_COSINE (capped at 1):
  an answer sentence that addresses a question is not its paraphrase, so its cosine with the question runs
  lower than a grounded sentence's with its source.
bench/guardrails.py measures both on SQuAD 2.0 (answers from the passage against answers from other ones).
"""

from __future__ import annotations

import re

import numpy as np

#: The cosine of an answer sentence with the question at which RELEVANCE reaches 1.
RELEVANT_COSINE = 0.6
_TOKEN = re.compile(r"\w+(?:[.,]\d+)*")


def _specifics(sentence: str) -> set[str]:
    tokens = _TOKEN.findall(sentence)
    return {t.lower() for i, t in enumerate(tokens) if any(c.isdigit() for c in t) or (i > 0 and t[0].isupper())}


def grounding(answer: list[str], answer_vectors: np.ndarray, source: list[str], source_vectors: np.ndarray
              ) -> float:
    if not answer:
        return 1.0
    if not source:
        return 0.0
    known = {t.lower() for sentence in source for t in _TOKEN.findall(sentence)}
    best = (answer_vectors @ source_vectors.T).max(axis=1)
    support = []
    for sentence, cosine in zip(answer, best, strict=True):
        specifics = _specifics(sentence)
        share = len(specifics & known) / len(specifics) if specifics else 1.0
        support.append(max(0.0, float(cosine)) * share ** 2)
    return round(min(1.0, min(support)), 4)


def relevance(answer_vectors: np.ndarray, query_vectors: np.ndarray) -> float:
    if not len(answer_vectors):
        return 1.0
    if not len(query_vectors):
        return 0.0
    return round(min(1.0, max(0.0, float((answer_vectors @ query_vectors.T).max()) / RELEVANT_COSINE)), 4)
