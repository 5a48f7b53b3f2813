"""BLEU through sacrebleu itself (the well-kept reference, already fast): corpus and sentence scores, 0-100.

Defaults are sacrebleu's: tokenizer 13a, `smooth_method="exp"`, case-sensitive, max order 4, closest reference
length. Other sacrebleu tokenizers (`intl`, `char`, `zh`, `ja-mecab`, `none`, ...) pass straight through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sacrebleu.metrics import BLEU as _SacreBLEU

from outcrop.evaluation.metrics.base import Metric, References, as_list


def reference_streams(references: Sequence[References]) -> list[list[str | None]]:
    """Per-item reference lists -> sacrebleu's reference streams `[[item1_ref1, ...], [item1_ref2, ...]]`.

    Items with fewer references than the most any item has are padded with None, which sacrebleu skips
    (variable number of references per segment).
    """
    per_item = [as_list(r) for r in references]
    if any(not refs for refs in per_item):
        raise ValueError("every prediction needs at least one reference")
    width = max((len(refs) for refs in per_item), default=1)
    return [[refs[k] if k < len(refs) else None for refs in per_item] for k in range(width)]


class Bleu(Metric):
    name = "bleu"

    def __init__(self, tokenize: str = "13a", smooth_method: str = "exp", lowercase: bool = False) -> None:
        self.tokenize = tokenize
        self.smooth_method = smooth_method
        self.lowercase = lowercase
        self._corpus = _SacreBLEU(tokenize=tokenize, smooth_method=smooth_method, lowercase=lowercase)
        self._sentence: _SacreBLEU | None = None  # built on first `score`

    def signature(self) -> str:
        """sacrebleu's own signature string, e.g. `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`.

        `nrefs` is that of the last `corpus` call (`var` when items had different numbers), 1 before any.
        """
        if not hasattr(self._corpus, "num_refs"):
            fresh = _SacreBLEU(tokenize=self.tokenize, smooth_method=self.smooth_method, lowercase=self.lowercase)
            fresh.num_refs = 1
            return str(fresh.get_signature())
        return str(self._corpus.get_signature())

    def score(self, prediction: str, references: References) -> dict[str, Any]:
        """Sentence BLEU with effective order, as sacrebleu's `sentence_score`."""
        refs = as_list(references)
        if not refs:
            raise ValueError("at least one reference is needed")
        if self._sentence is None:
            self._sentence = _SacreBLEU(
                tokenize=self.tokenize, smooth_method=self.smooth_method, lowercase=self.lowercase, effective_order=True
            )
        result = self._sentence.sentence_score(prediction, refs)
        return _details(result)

    def corpus(self, predictions: Sequence[str], references: Sequence[References]) -> dict[str, float]:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        result = self._corpus.corpus_score(list(predictions), reference_streams(references))
        return {"bleu": float(result.score)}

    def corpus_details(self, predictions: Sequence[str], references: Sequence[References]) -> dict[str, Any]:
        """Corpus BLEU with its n-gram precisions, brevity penalty and lengths."""
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        return _details(self._corpus.corpus_score(list(predictions), reference_streams(references)))


def _details(result: Any) -> dict[str, Any]:
    return {
        "bleu": float(result.score),
        "precisions": [float(p) for p in result.precisions],
        "brevity_penalty": float(result.bp),
        "sys_len": int(result.sys_len),
        "ref_len": int(result.ref_len),
    }
