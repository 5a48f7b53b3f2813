"""Evaluation jobs' chrF, chrF++, TER, HF exact match and SQuAD metrics, and the sufficient statistics that
corpus metrics hand to confidence intervals."""

from __future__ import annotations

import json
import re

import botocore.session
import pytest

from outcrop.errors import ValidationException
from outcrop.evaluation import datasets, scoring
from outcrop.evaluation.metrics.bleu import Bleu
from outcrop.evaluation.metrics.matching import squad_f1
from outcrop.evaluation.metrics.sacrebleu_metrics import CHRF_PP_WORD_ORDER, Chrf, Ter

RECORDS = datasets.parse_records([json.dumps(r) for r in (
    {"prompt": "sky?", "referenceResponse": "the sky is blue", "category": "nature"},
    {"prompt": "cows drink?", "referenceResponse": "water", "answers": ["water", "Milk."], "category": "farm"},
    {"prompt": "grass?", "referenceResponse": "grass is green", "category": "nature"},
    {"prompt": "who?", "referenceResponse": "the Denver Broncos"},
)], "d")
OUTPUTS = ["the sky is blue today", "milk", "purple grass is green", "Denver Broncos"]
REFS = [list(r.answers) for r in RECORDS]
NEW = (scoring.CHRF, scoring.CHRF_PP, scoring.TER, scoring.EXACT_MATCH, scoring.SQUAD_EM, scoring.SQUAD_F1)


class _Tools(scoring.Tools):
    def __init__(self):
        super().__init__(lambda: None, lambda: None)


def _compute(name: str) -> scoring.MetricResult:
    return scoring.compute(name, "Custom", RECORDS, OUTPUTS, _Tools())


@pytest.mark.parametrize("name, scorer", [
    (scoring.BLEU, Bleu()), (scoring.CHRF, Chrf()), (scoring.CHRF_PP, Chrf(word_order=CHRF_PP_WORD_ORDER)),
    (scoring.TER, Ter()),
])
def test_corpus_metrics_overall_category_records_and_stats(name, scorer):
    result = _compute(name)
    key = scorer.name
    assert result.overall == scorer.corpus(OUTPUTS, REFS)[key]
    assert result.values == [scorer.score(o, r)[key] for o, r in zip(OUTPUTS, REFS, strict=True)]
    assert result.by_category == {
        "farm": scorer.corpus([OUTPUTS[1]], [REFS[1]])[key],
        "nature": pytest.approx(scorer.corpus([OUTPUTS[0], OUTPUTS[2]], [REFS[0], REFS[2]])[key], abs=1e-9)}
    # What confidence intervals resample: one row per record, scored from column sums.
    assert len(result.stats) == len(RECORDS)
    assert result.from_stats([sum(column) for column in zip(*result.stats, strict=True)]) == result.overall
    assert result.from_stats(result.stats[1]) == result.by_category["farm"]


def test_ter_is_lower_is_better_without_upper_bound():
    result = _compute(scoring.TER)
    assert result.spec.higher_is_better is False and result.spec.high is None and result.spec.low == 0
    # "purple grass is green" for "grass is green": one insertion per three reference words.
    assert result.values[2] == pytest.approx(100 / 3)
    # "milk" for "water" or "Milk.": one edit either way (lowercased, but the period stays on the word unless
    # `normalized`), over the references' average length of one word.
    assert result.values[1] == 100.0
    for name in (scoring.BLEU, scoring.CHRF, scoring.CHRF_PP):
        assert (scoring.spec(name, "Custom").high, scoring.spec(name, "Custom").higher_is_better) == (100, True)


def test_exact_match_and_squad_are_means_without_stats():
    exact = _compute(scoring.EXACT_MATCH)
    assert exact.values == [0.0, 0.0, 0.0, 0.0]  # HF's defaults: "milk" is not "Milk."
    assert exact.overall == 0.0 and exact.spec.high == 1
    em, f1 = _compute(scoring.SQUAD_EM), _compute(scoring.SQUAD_F1)
    assert em.values == [0.0, 100.0, 0.0, 100.0] and em.overall == 50.0 and em.spec.high == 100
    assert f1.values == pytest.approx([100 * squad_f1(o, r) for o, r in zip(OUTPUTS, REFS, strict=True)])
    assert f1.values[0] == pytest.approx(100 * 2 * 0.75 / 1.75)  # sky blue today vs sky blue: P 3/4, R 1
    assert f1.by_category["farm"] == 100.0 and f1.overall == pytest.approx(sum(f1.values) / 4)
    for result in (exact, em, f1, _compute("Outcrop.ROUGE-1")):
        assert result.stats is None and result.from_stats is None


def test_new_names_fit_botocore_and_are_listed():
    shape = botocore.session.get_session().get_service_model("bedrock").shape_for("EvaluationMetricName")
    pattern = re.compile(shape.metadata["pattern"])
    for name in NEW:
        assert pattern.fullmatch(name), name
        assert scoring.spec(name, "QuestionAndAnswer").needs_reference
    assert not pattern.fullmatch("Outcrop.chrF++")
    with pytest.raises(ValidationException, match=re.escape("(Outcrop.chrFpp is chrF++")):
        scoring.spec("Outcrop.chrF++", "Custom")
    with pytest.raises(ValidationException) as info:
        scoring.spec("Outcrop.METEOR", "Custom")
    assert all(name in str(info.value) for name in NEW)
