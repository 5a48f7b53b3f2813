"""Aggregation: a human job's ratings -> each custom metric's scores, distribution and win rates (see
`outcrop.evaluation.human.methods` for what each rating method's score means)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from outcrop.errors import ResourceNotFoundException
from outcrop.evaluation import statistics
from outcrop.evaluation.human.methods import (
    CHOICE,
    COMPARISON_LIKERT,
    COMPARISON_METHODS,
    DOWN,
    LIKERT,
    RANK,
    THUMBS,
    TIE,
    UP,
    metrics_for,
)
from outcrop.evaluation.tables import EvaluationJobRow, HumanRatingRow, HumanTaskRow
from outcrop.platform.database import Database


def _mean(numbers: list[float]) -> float | None:
    return sum(numbers) / len(numbers) if numbers else None


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def _preferences(method: str, value: Any, models: list[str]) -> tuple[dict[str, float], str]:
    """For a comparison rating: each model's per-rating score and who won ("tie" or a model)."""
    first, second = models
    if method == COMPARISON_LIKERT:
        scores = {first: 6 - value, second: value}
        return scores, TIE if value == 3 else (first if value < 3 else second)
    if method == CHOICE:
        if value == TIE:
            return {first: 0.5, second: 0.5}, TIE
        return {m: 1.0 if m == value else 0.0 for m in models}, value
    ranks = value  # RANK
    if ranks[first] == ranks[second]:
        return {m: float(ranks[m]) for m in models}, TIE
    return {m: float(ranks[m]) for m in models}, min(models, key=lambda m: ranks[m])


def _labels(method: str, models: list[str]) -> list[str]:
    return {THUMBS: [UP, DOWN], LIKERT: ["1", "2", "3", "4", "5"], COMPARISON_LIKERT: ["1", "2", "3", "4", "5"],
            CHOICE: ["better", "worse", TIE], RANK: [str(r) for r in range(1, len(models) + 1)]}[method]


def _scores(method: str, values: list[Any], models: list[str]) -> dict[str, Any]:
    """scores, counts, distribution (and winRates for comparisons) of one metric over some ratings, and
    `samples`: each model's score per rating (None where a rating left it out), for the intervals."""
    per_model: dict[str, list[float]] = {m: [] for m in models}
    per_rating: dict[str, list[float | None]] = {m: [] for m in models}
    distribution = {m: dict.fromkeys(_labels(method, models), 0) for m in models}
    wins = dict.fromkeys([*models, TIE], 0)
    for value in values:
        if method in (THUMBS, LIKERT):
            for model in models:
                per_rating[model].append(None)
            for model, v in value.items():
                if model in per_model:
                    per_model[model].append(1.0 if v == UP else 0.0 if v == DOWN else float(v))
                    per_rating[model][-1] = per_model[model][-1]
                    distribution[model][str(v)] += 1
            continue
        scores, winner = _preferences(method, value, models)
        wins[winner] += 1
        for model in models:
            per_model[model].append(scores[model])
            per_rating[model].append(scores[model])
            label = ({COMPARISON_LIKERT: str(int(scores[model])), RANK: str(int(scores[model]))}.get(method)
                     or (TIE if winner == TIE else "better" if winner == model else "worse"))
            distribution[model][label] += 1
    result: dict[str, Any] = {
        "scores": {m: _mean(per_model[m]) for m in models},
        "counts": {m: len(per_model[m]) for m in models},
        "distribution": distribution,
        "samples": {m: statistics.Sample(per_rating[m]) for m in models},
    }
    if method in COMPARISON_METHODS:
        result["winRates"] = {k: _share(n, len(values)) for k, n in wins.items()}
    return result


RANGES = {THUMBS: ([0, 1], True), LIKERT: ([1, 5], True), COMPARISON_LIKERT: ([1, 5], True),
          CHOICE: ([0, 1], True), RANK: ([1, 2], False)}


def aggregate_ratings(request: dict[str, Any], tasks: Iterable[HumanTaskRow],
                      ratings: Iterable[HumanRatingRow]) -> list[dict[str, Any]]:
    """Per (taskType, dataset): each custom metric's entry in the report's shape. Every rating counts
    once (an item rated by two raters counts twice); records without a category are left out of
    `byCategory` only."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for rating in ratings:
        by_task.setdefault(rating.task_id, []).append(rating.values)
    groups: dict[tuple[str, str], list[HumanTaskRow]] = {}
    for task in sorted(tasks, key=lambda t: t.position):
        groups.setdefault((task.task_type, task.dataset_name), []).append(task)
    results = []
    for (task_type, dataset), group in groups.items():
        models: list[str] = []
        for task in group:
            models.extend(r["modelIdentifier"] for r in task.responses if r["modelIdentifier"] not in models)
        entries = []
        for metric in metrics_for(request, task_type, dataset):
            method = metric.rating_method
            rated = [(task.record.get("category"), values[metric.name], task.task_id)
                     for task in group for values in by_task.get(task.task_id, []) if metric.name in values]
            if method in COMPARISON_METHODS and len(models) != 2:
                continue  # check_custom_metrics refuses this at creation; nothing to compare
            overall = _scores(method, [v for _, v, _ in rated], models)
            categories = sorted({c for c, _, _ in rated if c is not None}, key=str)
            low_high, higher = RANGES[method]
            entry = {
                "name": metric.name, "kind": "human", "description": metric.description, "ratingMethod": method,
                "range": [low_high[0], len(models) if method == RANK else low_high[1]], "higherIsBetter": higher,
                "scores": overall["scores"], "counts": overall["counts"],
                "byCategory": {str(c): _scores(method, [v for cc, v, _ in rated if cc == c], models)["scores"]
                               for c in categories},
                "distribution": overall["distribution"],
            }
            if "winRates" in overall:
                entry["winRates"] = overall["winRates"]
            # The ratings of one item (several raters) are resampled together; each rating scores both models of
            # its item, so they stay paired.
            statistics.annotate([entry], {metric.name: overall["samples"]}, models, len(rated),
                                statistics.Settings(), categories=[c for c, _, _ in rated],
                                clusters=[task for _, _, task in rated])
            entries.append(entry)
        results.append({"taskType": task_type, "dataset": dataset, "records": len(group), "metrics": entries})
    return results


def aggregate(db: Database, job_arn: str) -> list[dict[str, Any]]:
    """`aggregate_ratings` of a stored job's items and ratings."""
    with db.session() as session:
        job = session.get(EvaluationJobRow, job_arn)
        if job is None:
            raise ResourceNotFoundException(f"The evaluation job {job_arn} does not exist")
        tasks = list(session.scalars(select(HumanTaskRow).where(HumanTaskRow.job_arn == job_arn)))
        ratings = list(session.scalars(select(HumanRatingRow).where(HumanRatingRow.job_arn == job_arn)
                                       .order_by(HumanRatingRow.id)))
    return aggregate_ratings(job.request, tasks, ratings)
