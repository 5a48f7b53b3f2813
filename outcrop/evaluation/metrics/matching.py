"""Exact match and SQuAD EM/F1 as Hugging Face `evaluate` computes them (its `exact_match` and `squad`).

* `HfExactMatch`: HF's exact match with its options, applied in HF's order: each of `regexes_to_ignore` is
  removed (`re.sub`, in the given order), then the text is lowercased (`ignore_case`), then `string.punctuation`
  is removed (`ignore_punctuation`), then `string.digits` (`ignore_numbers`); then the strings must be equal,
  surrounding white space included (fmeval's `exact_match` in `builtin` strips it: a different metric).
  Corpus: the mean, 0-1, as HF.
* `Squad`: the official SQuAD v1.1 evaluation that HF's `squad` runs: `normalize_answer` (lowercase, drop
  punctuation, drop a/an/the, collapse white space), exact match and Counter-based token F1, each the best over
  the ground truths, on 0-100. Unlike `builtin.qa_f1` (SQuAD v2's rule), an empty answer scores F1 0 even
  against an empty prediction, as v1.1 does.

References may be several per prediction (a list, or `<OR>`-joined as in Bedrock's datasets, see
`builtin.answer_list`): the best over them. HF's `exact_match` takes one reference per prediction, and with one
these are its numbers.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence
from typing import Any

from outcrop.evaluation.metrics.base import References
from outcrop.evaluation.metrics.builtin import (
    VERSION,
    MeanMetric,
    answer_list,
    normalize_answer,
    quasi_exact_match,
    token_f1,
)

_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)
_NO_DIGITS = str.maketrans("", "", string.digits)


class HfExactMatch(MeanMetric):
    """HF `evaluate`'s exact match; `re.error` for a regex that does not compile."""

    name = "hf_exact_match"

    def __init__(self, regexes_to_ignore: Sequence[str] = (), ignore_case: bool = False,
                 ignore_punctuation: bool = False, ignore_numbers: bool = False) -> None:
        if isinstance(regexes_to_ignore, str):  # one pattern, not its characters
            regexes_to_ignore = [regexes_to_ignore]
        self.regexes_to_ignore = list(regexes_to_ignore)
        self.ignore_case = ignore_case
        self.ignore_punctuation = ignore_punctuation
        self.ignore_numbers = ignore_numbers
        self._regexes = [re.compile(pattern) for pattern in self.regexes_to_ignore]

    def normalize(self, text: str) -> str:
        """The text as HF compares it: HF's order of operations, each step only when asked for."""
        for regex in self._regexes:
            text = regex.sub("", text)
        if self.ignore_case:
            text = text.lower()
        if self.ignore_punctuation:
            text = text.translate(_NO_PUNCTUATION)
        if self.ignore_numbers:
            text = text.translate(_NO_DIGITS)
        return text

    def signature(self) -> str:
        def flag(ignored: bool) -> str:
            return "ignored" if ignored else "kept"

        return (f"hf_exact_match|regexes:{json.dumps(self.regexes_to_ignore)}|case:{flag(self.ignore_case)}"
                f"|punct:{flag(self.ignore_punctuation)}|digits:{flag(self.ignore_numbers)}|v:{VERSION}")

    def score(self, prediction: str, references: References) -> dict[str, Any]:
        pred = self.normalize(prediction)
        return {self.name: float(any(pred == self.normalize(a) for a in answer_list(references)))}


#: SQuAD v1.1's `exact_match_score`, best over the answers, is fmeval's quasi-exact match (same normalisation).
squad_exact_match = quasi_exact_match


def squad_f1(prediction: str, answers: str | Sequence[str]) -> float:
    """SQuAD v1.1's `f1_score` (0-1), best over the answers: 0.0 whenever no token is shared, empty texts
    included."""
    pred = normalize_answer(prediction).split()
    return max(token_f1(pred, normalize_answer(a).split()) for a in answer_list(answers))


class Squad(MeanMetric):
    """SQuAD v1.1 exact match and F1 on 0-100, keyed `exact_match` and `f1` as HF's `squad`."""

    name = "squad"

    def signature(self) -> str:
        return f"squad|norm:squad-v1.1|scale:100|v:{VERSION}"

    def score(self, prediction: str, references: References) -> dict[str, Any]:
        return {"exact_match": 100.0 * squad_exact_match(prediction, references),
                "f1": 100.0 * squad_f1(prediction, references)}

    def corpus(self, predictions: Sequence[str], references: Sequence[References]) -> dict[str, float]:
        # The official script's arithmetic: sum the 0-1 scores, then 100 * sum / total.
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        if not predictions:
            return {}
        pairs = list(zip(predictions, references, strict=True))
        return {"exact_match": 100.0 * sum(squad_exact_match(p, r) for p, r in pairs) / len(pairs),
                "f1": 100.0 * sum(squad_f1(p, r) for p, r in pairs) / len(pairs)}
