"""Intervals and paired tests: sacrebleu's paired bootstrap as the oracle, and their error rates measured on
synthetic data whose truth is known."""

from __future__ import annotations

import random

import numpy as np
import pytest
from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest

from outcrop.evaluation import statistics
from outcrop.evaluation.statistics import Resamples, Sample, Settings, holm

WORDS = "the cat sat on a mat while dog ran far from home in rain and sun".split()


def sentences(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for _ in range(count)]


def noisy(texts: list[str], seed: int, keep: float) -> list[str]:
    """Each word kept with probability `keep`, else replaced: a system that is right `keep` of the time."""
    rng = random.Random(seed)
    return [" ".join(w if rng.random() < keep else rng.choice(WORDS) for w in t.split()) for t in texts]


def bleu_sample(hypotheses: list[str], references: list[str]) -> Sample:
    bleu = BLEU()
    stats = bleu._extract_corpus_statistics(hypotheses, [references])
    return Sample([0.0] * len(hypotheses), stats, lambda sums: bleu._compute_score_from_stats(list(sums)).score)


def test_bleu_comparison_resamples_as_sacrebleus_paired_bootstrap():
    references = sentences(1, 120)
    baseline, candidate = noisy(references, 2, 0.6), noisy(references, 3, 0.7)
    _, results = PairedTest([("baseline", baseline), ("candidate", candidate)], {"BLEU": BLEU()}, [references],
                            test_type="bs", n_samples=1000)()
    theirs = results["BLEU"][1]

    resamples = Resamples(len(references), Settings())
    ours = resamples.compare(bleu_sample(baseline, references), bleu_sample(candidate, references))
    assert ours["test"] == "paired bootstrap"
    assert ours["difference"] == pytest.approx(theirs.score - results["BLEU"][0].score)
    # The same resamples: sacrebleu's p-value formula on our resampled differences gives its p exactly (ours
    # is the null-shifted one, which keeps its level: see the calibration test below).
    differences = resamples.replicates(bleu_sample(candidate, references)) - \
        resamples.replicates(bleu_sample(baseline, references))
    spread = np.abs(differences)
    their_formula = (np.sum(spread - spread.mean() > abs(ours["difference"])) + 1) / 1001
    assert their_formula == pytest.approx(theirs.p_value)
    # sacrebleu's candidate interval: mean of the resampled scores and half the central 95% (n // 40 from each end).
    replicates = np.sort(resamples.replicates(bleu_sample(candidate, references)))
    assert replicates.mean() == pytest.approx(theirs.mean, abs=1e-4)
    assert (replicates[-1 - 1000 // 40] - replicates[1000 // 40]) / 2 == pytest.approx(theirs.ci, abs=1e-4)
    low, high = ours["interval"]
    assert low < ours["difference"] < high


def test_intervals_cover_the_true_mean_at_the_stated_rate():
    rng = np.random.default_rng(7)
    settings = Settings(resamples=400)
    trials, covered = 300, 0
    for trial in range(trials):
        values = rng.binomial(1, 0.3, size=150).astype(float)
        low, high = Resamples(150, Settings(resamples=400, seed=trial)).interval(Sample(list(values)))
        covered += low <= 0.3 <= high
    # Binomial spread over 300 trials is about 1.3 points; the percentile bootstrap runs a little narrow.
    assert 0.90 <= covered / trials <= 0.985, covered / trials
    assert settings.signature().startswith("ci:percentile-bootstrap|n:400|level:0.95|seed:12345")


def test_the_randomization_test_keeps_its_level_and_finds_real_differences():
    rng = np.random.default_rng(11)
    settings = Settings(resamples=50, permutations=1000)
    false_alarms = found = 0
    trials = 200
    for trial in range(trials):
        a = rng.normal(0.5, 0.2, size=80)
        same = rng.normal(0.5, 0.2, size=80)
        better = a + rng.normal(0.08, 0.1, size=80)
        resamples = Resamples(80, Settings(resamples=50, permutations=1000, seed=trial))
        false_alarms += resamples.compare(Sample(list(a)), Sample(list(same)))["pValue"] < 0.05
        found += resamples.compare(Sample(list(a)), Sample(list(better)))["pValue"] < 0.05
    assert false_alarms / trials <= 0.09, false_alarms
    assert found / trials >= 0.95, found
    assert settings.permutations == 1000


def test_identical_scores_are_never_called_different_and_missing_scores_are_left_out():
    resamples = Resamples(4, Settings(resamples=100, permutations=100))
    same = resamples.compare(Sample([0.1, 0.5, None, 0.9]), Sample([0.1, 0.5, 0.7, 0.9]))
    assert same["difference"] == 0 and same["pValue"] == 1.0 and same["pairs"] == 3
    assert resamples.compare(Sample([None] * 4), Sample([1.0] * 4)) is None
    assert resamples.interval(Sample([None] * 4)) is None


def test_holm_matches_its_definition():
    # Holm (1979): sorted p times (m - rank), made monotone, capped at 1.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_a_report_gets_intervals_comparisons_and_one_correction():
    settings = Settings(resamples=200, permutations=500)
    rng = np.random.default_rng(3)
    base, tuned = rng.uniform(0, 0.4, 60), rng.uniform(0.3, 0.9, 60)
    metrics = [{"name": "Outcrop.ROUGE-1", "higherIsBetter": True, "scores": {"A": base.mean(), "B": tuned.mean()}},
               {"name": "Builtin.Toxicity", "higherIsBetter": False, "scores": {"A": 0.1, "B": 0.1}}]
    samples = {"Outcrop.ROUGE-1": {"A": Sample(list(base)), "B": Sample(list(tuned))},
               "Builtin.Toxicity": {"A": Sample([0.1] * 60), "B": Sample([0.1] * 60)}}
    statistics.annotate(metrics, samples, ["A", "B"], 60, settings)
    summary = {"tasks": [{"metrics": metrics}]}
    statistics.correct(summary, settings)
    rouge, toxicity = metrics
    low, high = rouge["intervals"]["B"]
    assert low < tuned.mean() < high
    [comparison] = rouge["comparisons"]
    assert comparison["baseline"] == "A" and comparison["candidate"] == "B" and comparison["better"] == "B"
    assert comparison["significant"] and comparison["pAdjusted"] == pytest.approx(2 * comparison["pValue"])
    assert toxicity["comparisons"][0]["better"] is None and not toxicity["comparisons"][0]["significant"]
    assert summary["statistics"]["signature"] == settings.signature()


@pytest.mark.parametrize("seed,confidence,n_samples", [(0, 0.95, 1000), (42, 0.9, 300)])
def test_rouge_bootstrap_is_rouge_scores_aggregator_to_the_bit(seed, confidence, n_samples):
    from rouge_score import rouge_scorer, scoring

    from outcrop.evaluation.metrics.rouge import Rouge, bootstrap_aggregate

    types = ["rouge1", "rouge2", "rougeL"]
    references, predictions = sentences(5, 40), noisy(sentences(5, 40), 6, 0.5)
    scorer, aggregator = rouge_scorer.RougeScorer(types), scoring.BootstrapAggregator(confidence, n_samples)
    for prediction, reference in zip(predictions, references, strict=True):
        aggregator.add_scores(scorer.score(reference, prediction))
    np.random.seed(seed)
    theirs = aggregator.aggregate()
    ours = bootstrap_aggregate([Rouge(types).score(p, r) for p, r in zip(predictions, references, strict=True)],
                               confidence=confidence, n_samples=n_samples, seed=seed)
    assert list(ours) == types
    for rouge_type in types:
        for bound in ("low", "mid", "high"):
            assert ours[rouge_type][bound] == getattr(theirs[rouge_type], bound)._asdict()


def test_the_corpus_test_keeps_its_level_on_two_runs_of_one_system():
    """BLEU of two runs of the same noisy system (no real difference), 120 times: p < 0.05 about 5% of them."""
    false_alarms, trials = 0, 120
    for trial in range(trials):
        references = sentences(1000 + trial, 80)
        first, second = noisy(references, 2 * trial, 0.7), noisy(references, 2 * trial + 1, 0.7)
        resamples = Resamples(80, Settings(resamples=300, seed=trial))
        false_alarms += resamples.compare(bleu_sample(first, references),
                                          bleu_sample(second, references))["pValue"] < 0.05
    assert false_alarms / trials <= 0.10, false_alarms


def test_the_metrics_cli_adds_intervals_rouge_scores_own_with_the_same_seed(tmp_path, capsys):
    import json

    from rouge_score import rouge_scorer, scoring

    from outcrop.cli import main

    references, predictions = sentences(8, 30), noisy(sentences(8, 30), 9, 0.6)
    (tmp_path / "p.txt").write_text("\n".join(predictions) + "\n")
    (tmp_path / "r.txt").write_text("\n".join(references) + "\n")
    files = ["--predictions", str(tmp_path / "p.txt"), "--references", str(tmp_path / "r.txt")]
    assert main(["metrics", "score", "--metric", "rouge,bleu,qa_f1", *files, "--bootstrap", "--seed", "5",
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    aggregator = scoring.BootstrapAggregator()
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
    for prediction, reference in zip(predictions, references, strict=True):
        aggregator.add_scores(scorer.score(reference, prediction))
    np.random.seed(5)
    theirs = aggregator.aggregate()
    assert printed["rouge1_low"] == theirs["rouge1"].low.fmeasure
    assert printed["rougeL_high"] == theirs["rougeL"].high.fmeasure
    for kind, score in theirs.items():  # the whole table: low, mid and high of precision, recall and F
        for end in ("low", "mid", "high"):
            assert printed["rougeBootstrap"][kind][end] == getattr(score, end)._asdict()
    for key in ("bleu", "qa_f1"):
        assert printed[f"{key}_low"] < printed[key] < printed[f"{key}_high"]
    assert main(["metrics", "score", "--metric", "bleu", *files, "--seed", "5"]) == 1
    assert "add --bootstrap" in capsys.readouterr().err


def test_records_of_one_unit_are_resampled_together():
    """Each of 40 items rated 5 times alike: resampled one by one, the interval pretends to 200 independent
    ratings; resampled by item it is the interval of 40 items."""
    rng = np.random.default_rng(4)
    items = list(rng.uniform(0, 1, 40))
    ratings = [v for v in items for _ in range(5)]
    units = [i for i in range(40) for _ in range(5)]
    settings = Settings(resamples=2000)
    naive = Resamples(200, settings).interval(Sample(ratings))
    clustered = Resamples(200, settings, clusters=units).interval(Sample(ratings))
    by_item = Resamples(40, settings).interval(Sample(items))
    width = lambda interval: interval[1] - interval[0]  # noqa: E731
    assert width(naive) < 0.6 * width(clustered)
    assert width(clustered) == pytest.approx(width(by_item), rel=0.15)
    # The randomization test swaps an item's ratings together: the same p as on the items themselves.
    other = [v + 0.05 for v in items]
    p_items = Resamples(40, settings).compare(Sample(items), Sample(other))["pValue"]
    p_units = Resamples(200, settings, clusters=units).compare(
        Sample(ratings), Sample([v for v in other for _ in range(5)]))["pValue"]
    assert p_units == pytest.approx(p_items, abs=0.01)


def test_many_comparisons_resample_enough_to_pass_holm():
    assert Settings.for_comparisons(1).resamples == statistics.RESAMPLES
    settings = Settings.for_comparisons(125)  # Bedrock's most: 5 datasets x 25 metrics
    assert 125 / (settings.resamples + 1) <= settings.alpha / 2


def test_a_verdict_never_contradicts_the_scores_and_a_score_without_a_number_gets_no_interval():
    # A scored 0.5 on 30 records only; B 0.6 there and 0.0 on the other 30: the pairs favour B, the scores A.
    a, b = Sample([0.5] * 30 + [None] * 30), Sample([0.6] * 30 + [0.0] * 30)
    metric = {"name": "m", "higherIsBetter": True, "scores": {"A": a.score(), "B": b.score()}}
    settings = Settings(resamples=200, permutations=500)
    statistics.annotate([metric], {"m": {"A": a, "B": b}}, ["A", "B"], 60, settings)
    statistics.correct({"tasks": [{"metrics": [metric]}]}, settings)
    [comparison] = metric["comparisons"]
    assert comparison["significant"] and comparison["pairs"] == 30 and comparison["better"] is None
    overflowed = {"name": "p", "scores": {"A": float("inf")}, "byCategory": {}}
    statistics.annotate([overflowed], {"p": {"A": Sample([1.0, float("inf")])}}, ["A"], 2, settings)
    assert overflowed["intervals"] == {"A": None}
