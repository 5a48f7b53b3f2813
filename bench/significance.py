#!/usr/bin/env python
"""What intervals and paired tests cost, against the libraries a user would run instead, and whether the tests
keep their stated error rate. One run:

    .venv/bin/python bench/significance.py [--prompts 1000] [--models 3] [--calibration-runs 40] [--seed 0]

1. Cost. `--models` systems answer `--prompts` prompts (references: runs of 35-45 words drawn from the evaluation
   samples that ship with Outcrop; a system keeps each word with its own probability, else drops or replaces it,
   so systems differ by a few points, as models do). The job's scoring of every metric below for every system is
   timed, then the statistics the job adds (an interval per score, a paired test per metric and pair of systems,
   Holm's correction), and their share of the scoring time is printed (goal: under 10%).
2. Against the libraries. The same intervals and tests through what a user would otherwise call: sacrebleu's
   paired bootstrap (`PairedTest`, 1,000 resamples) for BLEU and chrF, and rouge-score's `BootstrapAggregator`
   for ROUGE-1/ROUGE-L intervals; ratio = their time / ours, and whether the resamples agree (sacrebleu's
   p-value formula applied to our resampled differences must give its p-values exactly: the same seed draws
   the same resamples; our reported p-value is the null-shifted one, see outcrop/evaluation/statistics.py).
3. Calibration. Two runs of one system with different seeds (the same process, so no real difference) are
   compared `--calibration-runs` times on every metric; the share of comparisons with p < 0.05 before correction
   should stay near 5%, and after Holm's correction the share of jobs with any false alarm near or below 5%.
   For the corpus metrics the share sacrebleu's p-value formula would flag is printed beside it.

Printed, one line each, for scripts to read:

    scoring: X s for N systems x P prompts x M metrics
    statistics: Y s, share of scoring Z%  (goal < 10%)
    sacrebleu paired bootstrap (bleu, chrf): ours X s, sacrebleu Y s, ratio R, resamples agree yes|no
    rouge-score bootstrap (rouge1, rougeL): ours X s, rouge-score Y s, ratio R
    calibration: p < 0.05 in A% of K same-system comparisons (expect ~5%); any after Holm in B% of J jobs
    calibration, corpus metrics: ours A%, sacrebleu's p-value formula B% of K
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from metrics import word_list  # noqa: E402  (bench/metrics.py: the words of the shipped samples)

from outcrop.evaluation import scoring, statistics  # noqa: E402
from outcrop.evaluation.datasets import PromptRecord  # noqa: E402

#: Every metric the job computes without a model (BERTScore, toxicity and perplexity need one, and their
#: intervals cost the same as any mean metric's).
METRICS = ["Outcrop.ROUGE-1", "Outcrop.ROUGE-2", "Outcrop.ROUGE-L", "Outcrop.BLEU", "Outcrop.chrF",
           "Outcrop.chrFpp", "Outcrop.TER", "Outcrop.ExactMatch", "Outcrop.SQuAD-F1", "Builtin.Accuracy"]


def references(count: int, rng: random.Random, vocab: list[str]) -> list[str]:
    out = []
    for _ in range(count):
        start = rng.randrange(len(vocab))
        out.append(" ".join(vocab[(start + k) % len(vocab)] for k in range(rng.randint(35, 45))))
    return out


def system(refs: list[str], keep: float, seed: int, vocab: list[str]) -> list[str]:
    """A system that keeps each reference word with probability `keep`, else drops or replaces it."""
    rng = random.Random(seed)
    out = []
    for ref in refs:
        words = []
        for word in ref.split():
            r = rng.random()
            if r < keep:
                words.append(word)
            elif r < keep + (1 - keep) / 2:
                words.append(rng.choice(vocab))
        out.append(" ".join(words))
    return out


def records_for(refs: list[str]) -> list[PromptRecord]:
    return [PromptRecord(line=i + 1, prompt=f"Prompt {i}", reference=ref, answers=(ref,), category=None, raw={})
            for i, ref in enumerate(refs)]


def score(names: list[str], records: list[PromptRecord], outputs: list[str]) -> dict[str, statistics.Sample]:
    tools = scoring.Tools(lambda: None, lambda: None)
    out = {}
    for name in names:
        result = scoring.compute(name, "QuestionAndAnswer", records, outputs, tools)
        out[name] = statistics.Sample(result.values, result.stats, result.from_stats)
    return out


def available(names: list[str]) -> list[str]:
    kept = []
    for name in names:
        try:
            scoring.spec(name, "QuestionAndAnswer")
            kept.append(name)
        except Exception:  # noqa: BLE001 - a metric this checkout lacks is left out, and said so
            print(f"(skipping {name}: not available here)", file=sys.stderr)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--calibration-runs", type=int, default=40)
    parser.add_argument("--calibration-prompts", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng, vocab = random.Random(args.seed), word_list()
    names = available(METRICS)
    settings = statistics.Settings()

    # 1. Scoring, then the statistics the job adds to it.
    refs = references(args.prompts, rng, vocab)
    records = records_for(refs)
    systems = [f"model-{k}" for k in range(args.models)]
    outputs = {m: system(refs, 0.70 + 0.02 * k, args.seed + k, vocab) for k, m in enumerate(systems)}
    started = time.perf_counter()
    samples_by_model = {m: score(names, records, outputs[m]) for m in systems}
    scoring_time = time.perf_counter() - started

    started = time.perf_counter()
    metrics = [{"name": n, "higherIsBetter": scoring.spec(n, "QuestionAndAnswer").higher_is_better} for n in names]
    samples = {n: {m: samples_by_model[m][n] for m in systems} for n in names}
    statistics.annotate(metrics, samples, systems, len(records), settings)
    statistics.correct({"tasks": [{"metrics": metrics}]}, settings)
    stats_time = time.perf_counter() - started
    print(f"scoring: {scoring_time:.2f} s for {args.models} systems x {args.prompts} prompts x {len(names)} metrics")
    print(f"statistics: {stats_time:.2f} s, share of scoring {100 * stats_time / scoring_time:.1f}%  (goal < 10%)")

    # 2. The same through sacrebleu and rouge-score.
    compare_sacrebleu(metrics, systems, outputs, refs)
    compare_rouge_score(systems, outputs, refs, samples, settings)

    # 3. Calibration: the same system twice, with different seeds.
    flagged = total = jobs_with_alarm = corpus_total = corpus_ours = corpus_theirs = 0
    cal_refs = references(args.calibration_prompts, rng, vocab)
    cal_records = records_for(cal_refs)
    for run in range(args.calibration_runs):
        first = score(names, cal_records, system(cal_refs, 0.7, 10_000 + 2 * run, vocab))
        second = score(names, cal_records, system(cal_refs, 0.7, 10_001 + 2 * run, vocab))
        job = [{"name": n, "higherIsBetter": True} for n in names]
        run_settings = statistics.Settings(seed=run)
        statistics.annotate(job, {n: {"a": first[n], "b": second[n]} for n in names}, ["a", "b"],
                            len(cal_records), run_settings)
        resamples = statistics.Resamples(len(cal_records), run_settings)
        for metric in job:
            a, b = first[metric["name"]], second[metric["name"]]
            if a.corpus:
                spread = np.abs(resamples.replicates(b) - resamples.replicates(a))
                observed = abs(metric["comparisons"][0]["difference"])
                corpus_theirs += (np.sum(spread - spread.mean() > observed) + 1) / (len(spread) + 1) < settings.alpha
                corpus_ours += metric["comparisons"][0]["pValue"] < settings.alpha
                corpus_total += 1
        statistics.correct({"tasks": [{"metrics": job}]}, settings)
        found = [c for metric in job for c in metric["comparisons"]]
        flagged += sum(c["pValue"] < settings.alpha for c in found)
        total += len(found)
        jobs_with_alarm += any(c["significant"] for c in found)
    print(f"calibration: p < {settings.alpha:g} in {100 * flagged / total:.1f}% of {total} same-system comparisons "
          f"(expect ~5%); any after Holm in {100 * jobs_with_alarm / args.calibration_runs:.1f}% of "
          f"{args.calibration_runs} jobs")
    if corpus_total:
        print(f"calibration, corpus metrics: ours {100 * corpus_ours / corpus_total:.1f}%, sacrebleu's p-value "
              f"formula {100 * corpus_theirs / corpus_total:.1f}% of {corpus_total}")


def compare_sacrebleu(metrics: list[dict], systems: list[str], outputs: dict[str, list[str]],
                      refs: list[str]) -> None:
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    ours = {m["name"]: m for m in metrics}
    wanted = {"BLEU": ("Outcrop.BLEU", BLEU()), "chrF2": ("Outcrop.chrF", CHRF())}
    wanted = {k: v for k, v in wanted.items() if v[0] in ours}
    if not wanted:
        return
    # Ours did every pair; sacrebleu compares each system with the first only, so time ours on that share.
    pairs = len(systems) * (len(systems) - 1) // 2
    started = time.perf_counter()
    _, theirs = PairedTest([(m, outputs[m]) for m in systems], {k: v[1] for k, v in wanted.items()}, [refs],
                           test_type="bs", n_samples=statistics.RESAMPLES)()
    their_time = time.perf_counter() - started
    started = time.perf_counter()
    resamples = statistics.Resamples(len(refs), statistics.Settings())
    mine = {}
    for key, (name, _) in wanted.items():
        samples = {m: score([name], records_for(refs), outputs[m])[name] for m in systems}
        for k, candidate in enumerate(systems[1:], start=1):
            resamples.compare(samples[systems[0]], samples[candidate])
            mine[key, k] = resamples.replicates(samples[candidate]) - resamples.replicates(samples[systems[0]])
    our_time = time.perf_counter() - started
    agree = True  # sacrebleu's p-value formula on our resampled differences: the same resamples give its p
    for (key, k), differences in mine.items():
        spread, observed = np.abs(differences), abs(theirs[key][k].score - theirs[key][0].score)
        agree &= abs((np.sum(spread - spread.mean() > observed) + 1) / (len(spread) + 1) - theirs[key][k].p_value) \
            < 1e-12
    print(f"sacrebleu paired bootstrap ({', '.join(wanted)}): ours {our_time:.2f} s, sacrebleu {their_time:.2f} s, "
          f"ratio {their_time / our_time:.2f}, resamples agree {'yes' if agree else 'no'}  "
          f"({len(systems) - 1} of our {pairs} pairs, statistics extraction included on both sides)")


def compare_rouge_score(systems: list[str], outputs: dict[str, list[str]], refs: list[str],
                        samples: dict[str, dict[str, statistics.Sample]], settings: statistics.Settings) -> None:
    from rouge_score import rouge_scorer
    from rouge_score import scoring as rouge_scoring

    wanted = [t for t, n in (("rouge1", "Outcrop.ROUGE-1"), ("rougeL", "Outcrop.ROUGE-L")) if n in samples]
    scorer = rouge_scorer.RougeScorer(wanted)
    per_item = {m: [scorer.score(r, p) for p, r in zip(outputs[m], refs, strict=True)] for m in systems}
    started = time.perf_counter()
    for m in systems:
        aggregator = rouge_scoring.BootstrapAggregator(settings.confidence, settings.resamples)
        for item in per_item[m]:
            aggregator.add_scores(item)
        aggregator.aggregate()
    their_time = time.perf_counter() - started
    started = time.perf_counter()
    resamples = statistics.Resamples(len(refs), settings)
    for m in systems:
        for name in ("Outcrop.ROUGE-1", "Outcrop.ROUGE-L"):
            if name in samples:
                resamples.interval(samples[name][m])
    our_time = time.perf_counter() - started
    print(f"rouge-score bootstrap ({', '.join(wanted)}): ours {our_time:.3f} s, rouge-score {their_time:.3f} s, "
          f"ratio {their_time / our_time:.1f}  (F intervals for {len(systems)} systems; rouge-score also "
          "resamples precision and recall)")


if __name__ == "__main__":
    main()
