"""BLEU through sacrebleu itself (the well-kept reference, already fast): corpus and sentence scores, 0-100.

Defaults are sacrebleu's: tokenizer 13a, `smooth_method="exp"`, case-sensitive, max order 4, closest reference
length. Other sacrebleu tokenizers (`intl`, `char`, `zh`, `ja-mecab`, `none`, ...) pass straight through.
What BLEU shares with chrF and TER (reference streams, signature, sufficient statistics) is in
`sacrebleu_metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sacrebleu.metrics import BLEU as _SacreBLEU

from outcrop.evaluation.metrics.base import References
from outcrop.evaluation.metrics.sacrebleu_metrics import SacrebleuMetric
from outcrop.evaluation.metrics.sacrebleu_metrics import reference_streams as reference_streams  # re-exported


class Bleu(SacrebleuMetric):
    name = "bleu"
    score_name = "BLEU"
    _sacrebleu = _SacreBLEU

    def __init__(self, tokenize: str = "13a", smooth_method: str = "exp", lowercase: bool = False) -> None:
        self.tokenize = tokenize
        self.smooth_method = smooth_method
        self.lowercase = lowercase
        super().__init__(tokenize=tokenize, smooth_method=smooth_method, lowercase=lowercase)

    def _sentence_options(self) -> dict[str, Any]:
        # Effective order, as sacrebleu's `sentence_bleu` (and its warning for sentence BLEU without it): a
        # sentence shorter than the max order is scored on the n-gram orders it has.
        return {"effective_order": True}

    def _details(self, result: Any) -> dict[str, Any]:
        return {
            "bleu": float(result.score),
            "precisions": [float(p) for p in result.precisions],
            "brevity_penalty": float(result.bp),
            "sys_len": int(result.sys_len),
            "ref_len": int(result.ref_len),
        }

    def corpus_details(self, predictions: Sequence[str], references: Sequence[References]) -> dict[str, Any]:
        """Corpus BLEU with its n-gram precisions, brevity penalty and lengths."""
        return self._details(self.corpus_result(predictions, references))
