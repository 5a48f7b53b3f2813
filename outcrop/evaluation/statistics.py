"""How sure a score is, and whether two models really differ: intervals and paired tests for a job's scores.

- **Intervals.** Every score (a mean of per-record scores, or a corpus score such as BLEU) gets a percentile
  bootstrap interval: the records are resampled with replacement `resamples` times, the score recomputed on
  each resample, and the interval is the central `confidence` share of those scores. Corpus metrics are
  recomputed from their per-record sufficient statistics (sacrebleu's), so BLEU's interval is BLEU's, not a
  mean of sentence BLEUs.
- **Paired tests.** When a job scores two models on the same prompts, each metric gets "B - A": the
  difference, its paired bootstrap interval (the same resampled records for both models) and a p-value.
  Corpus metrics use the paired bootstrap test (Koehn 2004) on the resamples `sacrebleu --paired-bs` draws
  (the same indices from `numpy.random.default_rng(seed).choice`, so sacrebleu is the tests' oracle for
  them), with the p-value of the bootstrap distribution shifted to the null: how often |d* - mean(d*)|
  reaches the observed |d|. sacrebleu's own p-value, (|d*| - mean |d*|) > |d|, called 11.3% of same-system
  corpus comparisons different at 0.05 in bench/significance.py's calibration (600 comparisons: BLEU, chrF,
  chrF++ and TER on 150 pairs of runs of one system), the shifted one 6.2%, so the shifted one is what a
  report says. Mean metrics use a paired approximate
  randomization test (each record's two scores swapped at random `permutations` times, i.e. the sign of
  its difference flipped).
- **Many comparisons.** A job compares every metric on every dataset; Holm's step-down correction over all of
  a job's comparisons keeps the chance of calling any one of them different by luck at `alpha`. Each
  comparison reports both its own p-value and the adjusted one; "significant" uses the adjusted one. A
  bootstrap p-value is at least 1 / (resamples + 1), so a job with many comparisons resamples more
  (`Settings.for_comparisons`): otherwise no corpus metric could pass Holm's bar.
- **Records that belong together** (the turns of one conversation, the ratings of one item) are resampled
  and swapped together (`clusters`): resampling them one by one would make intervals too narrow.

Every setting is in `Settings` and in the signature the report prints, and the seed makes a report reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: sacrebleu's defaults: 1,000 bootstrap resamples (its --paired-bs-n) and seed 12345 (SACREBLEU_SEED), so
#: that a BLEU comparison here is exactly `sacrebleu --paired-bs`'s.
RESAMPLES = 1000
SEED = 12345
#: Approximate randomization trials for mean metrics (sacrebleu's --paired-ar-n).
PERMUTATIONS = 10000
CONFIDENCE = 0.95
ALPHA = 0.05
CORRECTION = "Holm"
#: How many resamples are summed at once: bounds the memory of a corpus metric's resampled statistics.
_CHUNK = 200


@dataclass(frozen=True)
class Settings:
    resamples: int = RESAMPLES
    permutations: int = PERMUTATIONS
    confidence: float = CONFIDENCE
    alpha: float = ALPHA
    seed: int = SEED

    def __post_init__(self) -> None:
        if self.resamples < 1 or self.permutations < 1:
            raise ValueError("resamples and permutations must be at least 1")
        if not 0 < self.confidence < 1 or not 0 < self.alpha < 1:
            raise ValueError("confidence and alpha must be between 0 and 1")

    @classmethod
    def for_comparisons(cls, comparisons: int) -> Settings:
        """Enough resamples that the smallest bootstrap p-value, times `comparisons` (Holm's first factor), is
        at most half of alpha; never fewer than the default."""
        needed = math.ceil(2 * comparisons / ALPHA)
        return cls(resamples=max(RESAMPLES, -(-needed // 1000) * 1000))

    def interval_signature(self) -> str:
        """What sets the intervals alone (`outcrop metrics score --bootstrap` compares nothing)."""
        return f"ci:percentile-bootstrap|n:{self.resamples}|level:{self.confidence:g}|seed:{self.seed}"

    def signature(self) -> str:
        return (f"{self.interval_signature()}|test:paired-bs,ar:{self.permutations}"
                f"|correction:{CORRECTION.lower()}|alpha:{self.alpha:g}")

    def describe(self) -> dict[str, Any]:
        """The report's `statistics` member: what every interval and p-value in it means."""
        return {"signature": self.signature(), "interval": "percentile bootstrap", "resamples": self.resamples,
                "confidence": self.confidence, "seed": self.seed, "alpha": self.alpha,
                "tests": {"corpus": "paired bootstrap (sacrebleu's)",
                          "mean": f"paired approximate randomization ({self.permutations} trials)"},
                "correction": f"{CORRECTION} over every comparison of the job"}


@dataclass
class Sample:
    """One model's scores for one metric over one dataset's records.

    A mean metric gives `values` (None where a record has no score); a corpus metric also gives `stats` (one row
    of sufficient statistics per record) and `from_stats` (the corpus score from the column sums of any rows)."""

    values: Sequence[float | None]
    stats: Sequence[Sequence[float]] | None = None
    from_stats: Callable[[Sequence[float]], float] | None = None

    @property
    def corpus(self) -> bool:
        return self.stats is not None and self.from_stats is not None

    def subset(self, rows: Sequence[int]) -> Sample:
        return Sample([self.values[i] for i in rows], [self.stats[i] for i in rows] if self.stats is not None
                      else None, self.from_stats)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        values = np.array([math.nan if v is None else float(v) for v in self.values], dtype=np.float64)
        valid = np.isfinite(values)
        return np.where(valid, values, 0.0), valid.astype(np.float64)

    def score(self) -> float | None:
        if self.corpus:
            return float(self.from_stats(np.asarray(self.stats, dtype=np.float64).sum(axis=0)))
        values, valid = self._arrays()
        return float(values.sum() / valid.sum()) if valid.any() else None


class Resamples:
    """The bootstrap resamples of one dataset's records, shared by every metric and model scored on them.

    `clusters` labels each record with the unit it is drawn with (a conversation, a rated item); without it
    each record is its own unit."""

    def __init__(self, records: int, settings: Settings, clusters: Sequence[Hashable] | None = None) -> None:
        self.records, self.settings = records, settings
        if clusters is not None and len(clusters) != records:
            raise ValueError(f"{len(clusters)} cluster labels for {records} records")
        labels = {label: i for i, label in enumerate(dict.fromkeys(clusters))} if clusters is not None else None
        #: Each record's unit (0..units-1).
        self.unit = np.array([labels[c] for c in clusters] if labels is not None else range(records),
                             dtype=np.int64)
        units = len(labels) if labels is not None else records
        rng = np.random.default_rng(settings.seed)
        # The same call as sacrebleu's paired bootstrap, so the same seed draws the same resamples.
        drawn = rng.choice(units, size=(settings.resamples, units), replace=True) if units else \
            np.zeros((settings.resamples, 0), dtype=np.int64)
        # How often each unit, then each record, is drawn in each resample: a mean over a resample is then one
        # matrix product.
        offsets = (drawn + np.arange(settings.resamples)[:, None] * units).ravel()
        per_unit = np.bincount(offsets, minlength=settings.resamples * units).reshape(settings.resamples, units)
        self.counts = (per_unit if labels is None else per_unit[:, self.unit]).astype(np.float64)
        self.units = units
        self._signs_rng = rng  # the permutation test draws on after the resamples, still from the one seed
        # A sample's replicates serve its interval and every comparison it is in: computed once (the sample is
        # kept with them, so that its id cannot be reused while it is here).
        self._replicates: dict[int, tuple[Sample, np.ndarray]] = {}

    def replicates(self, sample: Sample) -> np.ndarray:
        """The score on every resample (NaN where a resample holds no scored record)."""
        if id(sample) not in self._replicates:
            self._replicates[id(sample)] = (sample, self._compute_replicates(sample))
        return self._replicates[id(sample)][1]

    def _compute_replicates(self, sample: Sample) -> np.ndarray:
        if len(sample.values) != self.records:
            raise ValueError(f"{len(sample.values)} scores for {self.records} records")
        if sample.corpus:
            stats = np.asarray(sample.stats, dtype=np.float64)
            out = np.empty(self.settings.resamples)
            for start in range(0, self.settings.resamples, _CHUNK):
                sums = self.counts[start:start + _CHUNK] @ stats  # exact: the statistics are counts
                out[start:start + len(sums)] = [sample.from_stats(row) for row in sums]
            return out
        values, valid = sample._arrays()
        return _ratio(self.counts @ values, self.counts @ valid)

    def interval(self, sample: Sample) -> list[float] | None:
        return _percentiles(self.replicates(sample), self.settings.confidence)

    def compare(self, baseline: Sample, candidate: Sample) -> dict[str, Any] | None:
        """Candidate minus baseline: the difference, its paired interval and the test's p-value (None: no pairs)."""
        if baseline.corpus != candidate.corpus:
            raise ValueError("a corpus metric is compared with a corpus metric only")
        if baseline.corpus:
            base, cand = baseline.score(), candidate.score()
            rep_base, rep_cand = self.replicates(baseline), self.replicates(candidate)
            differences = rep_cand - rep_base
            # The resampled differences moved to the null hypothesis (mean 0): how often are they at least as
            # far from 0 as the observed one? +1 on both sides keeps the test's level honest.
            kept = differences[np.isfinite(differences)]
            shifted = np.abs(kept - kept.mean())
            p = (int(np.sum(shifted >= abs(cand - base) - 1e-12 * max(1.0, abs(cand - base)))) + 1) / (len(kept) + 1)
            return {"difference": cand - base, "interval": _percentiles(differences, self.settings.confidence),
                    "pValue": p, "test": "paired bootstrap", "pairs": self.records}
        base_values, base_valid = baseline._arrays()
        cand_values, cand_valid = candidate._arrays()
        both = base_valid * cand_valid
        pairs = int(both.sum())
        if not pairs:
            return None
        differences = (cand_values - base_values) * both
        observed = float(differences.sum() / pairs)
        interval = _percentiles(_ratio(self.counts @ differences, self.counts @ both), self.settings.confidence)
        # A unit's pairs are swapped together: the test permutes units, each its summed differences.
        per_unit = np.bincount(self.unit, weights=differences, minlength=self.units)
        return {"difference": observed, "interval": interval, "pValue": self._randomization(per_unit, pairs),
                "test": "paired approximate randomization", "pairs": pairs}

    def _randomization(self, differences: np.ndarray, pairs: int) -> float:
        """Two-sided p-value of the mean difference (sum / pairs) under random swaps of each unit's two sets
        of scores."""
        observed = abs(differences.sum()) / pairs
        if observed == 0.0:
            return 1.0  # no difference at all is never evidence of one
        trials, at_least = self.settings.permutations, 0
        tolerance = 1e-12 * max(1.0, observed)  # a swap that gives the same mean back counts as "as extreme"
        for start in range(0, trials, _CHUNK * 10):
            size = min(_CHUNK * 10, trials - start)
            signs = self._signs_rng.integers(0, 2, size=(size, len(differences)), dtype=np.int8) * 2 - 1
            means = np.abs(signs @ differences) / pairs
            at_least += int(np.sum(means >= observed - tolerance))
        return (at_least + 1) / (trials + 1)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def _percentiles(replicates: np.ndarray, confidence: float) -> list[float] | None:
    kept = replicates[np.isfinite(replicates)]
    if not len(kept):
        return None
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(kept, [tail, 100 - tail])
    return [float(low), float(high)]


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (each at most 1, never below its predecessor)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# ---------------------------------------------------------------- a job's report


def annotate(metrics: Sequence[dict[str, Any]], samples: dict[str, dict[str, Sample]], models: Sequence[str],
             records: int, settings: Settings, *, categories: Sequence[str | None] | None = None,
             clusters: Sequence[Hashable] | None = None) -> None:
    """Add `intervals` to every metric entry of one dataset (and `byCategoryIntervals` when its records have
    `categories`), and `comparisons` when it scored two models.

    `samples[metric][model]` holds the scores behind `entry["scores"][model]`. A comparison reads "candidate
    minus baseline", the baseline being the job's first model (`outcrop eval compare BASE CUSTOM`'s BASE)."""
    resamples = Resamples(records, settings, clusters)
    groups: dict[str, list[int]] = {}
    for i, category in enumerate(categories or []):
        if category is not None:
            groups.setdefault(str(category), []).append(i)
    by_group = {category: Resamples(len(rows), settings, [clusters[i] for i in rows] if clusters else None)
                for category, rows in groups.items()}
    for entry in metrics:
        per_model = samples.get(entry["name"]) or {}
        scores = entry.get("scores") or {}
        # A score that is no number (a perplexity that overflowed) gets no interval either.
        entry["intervals"] = {model: resamples.interval(sample) if _finite(scores.get(model)) else None
                              for model, sample in per_model.items()}
        if groups and entry.get("byCategory"):
            entry["byCategoryIntervals"] = {
                category: {model: by_group[category].interval(sample.subset(groups[category]))
                           if _finite((entry["byCategory"].get(category) or {}).get(model)) else None
                           for model, sample in per_model.items()}
                for category in groups if category in entry["byCategory"]}
        entry["comparisons"] = []
        for i, baseline in enumerate(models):
            for candidate in models[i + 1:]:
                if baseline in per_model and candidate in per_model:
                    result = resamples.compare(per_model[baseline], per_model[candidate])
                    if result is not None:
                        entry["comparisons"].append({"baseline": baseline, "candidate": candidate, **result})


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def correct(summary: dict[str, Any], settings: Settings) -> None:
    """Holm over every comparison of the job; marks each significant or not and names the better model.

    A significant paired difference whose sign disagrees with the two models' overall scores (possible when
    records scored for one model only are left out of the pairs) names no better model: the report would
    otherwise contradict its own table."""
    found = [(metric, c) for task in summary.get("tasks") or [] for metric in task.get("metrics") or []
             for c in metric.get("comparisons") or []]
    for (metric, comparison), adjusted in zip(found, holm([c["pValue"] for _, c in found]), strict=True):
        comparison["pAdjusted"] = adjusted
        comparison["significant"] = adjusted < settings.alpha
        higher = metric.get("higherIsBetter", True)
        scores = metric.get("scores") or {}
        overall = [scores.get(comparison[k]) for k in ("baseline", "candidate")]
        agrees = not all(map(_finite, overall)) or (overall[1] - overall[0]) * comparison["difference"] > 0
        if comparison["significant"] and comparison["difference"] != 0 and agrees:
            comparison["better"] = comparison["candidate"] if (comparison["difference"] > 0) == higher \
                else comparison["baseline"]
        else:
            comparison["better"] = None
    summary["statistics"] = settings.describe()
