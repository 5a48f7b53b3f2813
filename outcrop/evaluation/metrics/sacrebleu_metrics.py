"""chrF, chrF++ and TER through sacrebleu itself, and what every sacrebleu metric here (BLEU too) shares.

Each metric keeps one sacrebleu object for corpus scores and one for sentence scores, and every option that
sacrebleu offers passes straight through; the defaults are sacrebleu's, which Hugging Face `evaluate` also
uses, so its `chrf` and `ter` give the same numbers. Scores are on sacrebleu's 0-100 scale; TER is edits per
reference word x 100, so lower is better and it has no upper bound.

* chrF (Popović 2015): character n-gram F-beta. chrF++ (Popović 2017) is chrF with word n-grams up to
  `CHRF_PP_WORD_ORDER` as well; `Chrf(word_order=CHRF_PP_WORD_ORDER)`.
* TER (Snover et al. 2006): sacrebleu's tercom re-implementation, case-insensitive unless `case_sensitive`.

Several references per item are allowed, and items may have different numbers of them (see
`reference_streams`). For confidence intervals and per-category scores without re-scoring,
`corpus_statistics` gives sacrebleu's sufficient statistics, one row per item, and `from_stats` the corpus
score from the column sums of any subset of those rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sacrebleu.metrics import CHRF as _SacreCHRF
from sacrebleu.metrics import TER as _SacreTER
from sacrebleu.metrics.base import Metric as _SacreMetric

from outcrop.evaluation.metrics.base import Metric, References, as_list

#: Word n-gram order that makes chrF chrF++ (sacrebleu's `--chrf-word-order 2`, HF's `word_order=2`).
CHRF_PP_WORD_ORDER = 2


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


def _same_length(predictions: Sequence[str], references: Sequence[References]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")


class SacrebleuMetric(Metric):
    """A sacrebleu metric: corpus score, sentence score, signature and per-item sufficient statistics.

    Subclasses name the sacrebleu class (`_sacrebleu`), the score's name as sacrebleu prints it (`score_name`)
    and pass their options to `__init__`.
    """

    _sacrebleu: type[_SacreMetric]
    #: The score's name as sacrebleu prints it before the signature (`BLEU`, `chrF2++`, `TER`).
    score_name: str

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._corpus = self._sacrebleu(**options)
        # A second object, so that sentence scores neither change the corpus object's reference count (part of the
        # signature) nor share settings that only sentences need (BLEU's effective order).
        self._sentence = self._sacrebleu(**options, **self._sentence_options())

    def _sentence_options(self) -> dict[str, Any]:
        """Options added for sentence-level scores; none unless the metric needs them."""
        return {}

    def _details(self, result: Any) -> dict[str, Any]:
        """The JSON form of a sacrebleu score object (`score` and `corpus_details`)."""
        return {self.name: float(result.score)}

    def signature(self) -> str:
        """sacrebleu's own signature, after the score's name as sacrebleu prints it, e.g.
        `chrF2++|nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|version:2.6.0` (the name carries chrF's beta,
        which the signature alone leaves out).

        `nrefs` is that of the last corpus call (`var` when items had different numbers), 1 before any.
        """
        metric = self._corpus
        if not hasattr(metric, "num_refs"):  # sacrebleu learns the reference count from a corpus
            metric = self._sacrebleu(**self._options)
            metric.num_refs = 1
        return f"{self.score_name}|{metric.get_signature()}"

    def score(self, prediction: str, references: References) -> dict[str, Any]:
        """Sentence score, as sacrebleu's `sentence_score`."""
        refs = as_list(references)
        if not refs:
            raise ValueError("at least one reference is needed")
        return self._details(self._sentence.sentence_score(prediction, refs))

    def corpus_result(self, predictions: Sequence[str], references: Sequence[References]) -> Any:
        """sacrebleu's corpus score object."""
        _same_length(predictions, references)
        return self._corpus.corpus_score(list(predictions), reference_streams(references))

    def corpus(self, predictions: Sequence[str], references: Sequence[References]) -> dict[str, float]:
        return {self.name: float(self.corpus_result(predictions, references).score)}

    def corpus_statistics(self, predictions: Sequence[str], references: Sequence[References]) -> list[list[float]]:
        """sacrebleu's sufficient statistics, one row per item: what `corpus_score` sums before scoring."""
        _same_length(predictions, references)
        rows = self._corpus._extract_corpus_statistics(list(predictions), reference_streams(references))
        return [list(row) for row in rows]

    def from_stats(self, sums: Sequence[float]) -> float:
        """The corpus score from the column sums of any rows of `corpus_statistics` (of all: `corpus`'s score)."""
        return float(self._corpus._compute_score_from_stats(list(sums)).score)

    def sentence_from_stats(self, row: Sequence[float]) -> float:
        """One item's sentence score (`score`'s) from its row of `corpus_statistics`: the statistics of an item do
        not depend on the rest of the corpus, and sacrebleu's sentence score is its corpus score of one item."""
        return float(self._sentence._compute_score_from_stats(list(row)).score)


class Chrf(SacrebleuMetric):
    """chrF, or chrF++ with `word_order=CHRF_PP_WORD_ORDER`; key and CLI name `chrf`, `chrf+`, `chrf++`."""

    _sacrebleu = _SacreCHRF

    def __init__(self, char_order: int = _SacreCHRF.CHAR_ORDER, word_order: int = _SacreCHRF.WORD_ORDER,
                 beta: int = _SacreCHRF.BETA, lowercase: bool = False, whitespace: bool = False,
                 eps_smoothing: bool = False) -> None:
        self.char_order = char_order
        self.word_order = word_order
        self.beta = beta
        self.lowercase = lowercase
        self.whitespace = whitespace
        self.eps_smoothing = eps_smoothing
        self.name = "chrf" + "+" * word_order
        self.score_name = f"chrF{beta}" + "+" * word_order  # as sacrebleu's CHRFScore names it
        super().__init__(char_order=char_order, word_order=word_order, beta=beta, lowercase=lowercase,
                         whitespace=whitespace, eps_smoothing=eps_smoothing)


class Ter(SacrebleuMetric):
    """Translation edit rate; sentence scores also give the edit count and the (average) reference length."""

    name = "ter"
    score_name = "TER"
    _sacrebleu = _SacreTER

    def __init__(self, normalized: bool = False, no_punct: bool = False, asian_support: bool = False,
                 case_sensitive: bool = False) -> None:
        self.normalized = normalized
        self.no_punct = no_punct
        self.asian_support = asian_support
        self.case_sensitive = case_sensitive
        super().__init__(normalized=normalized, no_punct=no_punct, asian_support=asian_support,
                         case_sensitive=case_sensitive)

    def _details(self, result: Any) -> dict[str, Any]:
        return {"ter": float(result.score), "num_edits": int(result.num_edits),
                "ref_length": float(result.ref_length)}
