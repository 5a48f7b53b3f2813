"""What every metric offers: a signature that pins its settings, one pair, a whole corpus."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

#: One reference, or several for the same prediction.
References = str | Sequence[str]


def as_list(references: References) -> list[str]:
    return [references] if isinstance(references, str) else list(references)


class Metric(ABC):
    #: Short name used in signatures, CLI flags and JSON keys ("rouge", "bleu", "bertscore", ...).
    name: str

    @abstractmethod
    def signature(self) -> str:
        """Every setting that changes the number, e.g. `rouge|stem:yes|tok:default|v:outcrop-0.1`."""

    @abstractmethod
    def score(self, prediction: str, references: References) -> dict[str, Any]:
        """Scores of one prediction against its reference(s)."""

    @abstractmethod
    def corpus(self, predictions: Sequence[str], references: Sequence[References]) -> dict[str, float]:
        """Corpus scores, keyed as `outcrop metrics score --json` prints them (`rouge1`, `bleu`, ...)."""

    def score_items(self, predictions: Sequence[str], references: Sequence[References]) -> list[dict[str, Any]]:
        """Per-pair scores (for `--per-item`); metrics with batched models override this."""
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        return [self.score(p, r) for p, r in zip(predictions, references, strict=True)]
