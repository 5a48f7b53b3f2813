"""Rating methods and custom metrics: what a human job's raters are asked, and the values they give.

Ratings are stored in *model terms* (`HumanRatingRow.values`), whatever order the rater saw:

| ratingMethod          | stored value                                  | score per model (range, better)        |
|-----------------------|-----------------------------------------------|----------------------------------------|
| ThumbsUpDown          | {model: "up" or "down"}                        | share of "up" ([0, 1], higher)          |
| IndividualLikertScale | {model: 1..5}                                  | mean ([1, 5], higher)                   |
| ComparisonLikertScale | 1..5: 1 = the first model's response is much   | mean preference for the model, mapped   |
|                       | better, 3 = no preference, 5 = the second's    | so 5 = strongly preferred ([1, 5],      |
|                       | (first/second: the order of the item's         | higher); the two scores add up to 6     |
|                       | responses, i.e. of inferenceConfig.models)     |                                          |
| ComparisonChoice      | a model identifier, or "tie"                   | preference share: (wins + ties / 2) / n |
|                       |                                                | ([0, 1], higher)                        |
| ComparisonRank        | {model: rank}, 1 = best, ties share a rank     | mean rank ([1, 2], lower)               |
|                       | (competition ranking: 1,2 / 2,1 / 1,1)         |                                          |

Comparison methods also report win rates: the share of ratings each model won, and of ties (a
Likert 3, a "tie" choice, equal ranks). A tie is allowed for ComparisonChoice because forcing a
pick between two equally good (or bad) responses turns the rater's "no preference" into noise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from outcrop.errors import ValidationException

THUMBS, LIKERT, COMPARISON_LIKERT, CHOICE, RANK = (
    "ThumbsUpDown", "IndividualLikertScale", "ComparisonLikertScale", "ComparisonChoice", "ComparisonRank")
RATING_METHODS = (THUMBS, LIKERT, COMPARISON_LIKERT, CHOICE, RANK)
COMPARISON_METHODS = frozenset({COMPARISON_LIKERT, CHOICE, RANK})
#: Methods whose value has one entry per response (the others rate the pair as a whole).
PER_RESPONSE_METHODS = frozenset({THUMBS, LIKERT, RANK})
UP, DOWN, TIE = "up", "down", "tie"

_DIGITS = re.compile(r"[0-9]{1,18}")


# -- metrics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    rating_method: str


def check_custom_metrics(custom_metrics: list[dict[str, Any]], model_count: int) -> list[Metric]:
    """Raise ValidationException unless the human metrics make sense for `model_count` models.

    Shapes and name patterns are the API validator's job; this checks what the model cannot say:
    known methods, comparisons only between exactly two models, and one metric per name."""
    field = "evaluationConfig.human.customMetrics"
    if not isinstance(custom_metrics, list) or not custom_metrics:
        raise ValidationException(f"{field} must list at least one metric")
    seen: set[str] = set()
    metrics = []
    for i, entry in enumerate(custom_metrics):
        where = f"{field}[{i}]"
        if not isinstance(entry, dict):
            raise ValidationException(f"{where} must be an object with name, description and ratingMethod")
        name, method = entry.get("name"), entry.get("ratingMethod")
        if not isinstance(name, str) or not name.strip():
            raise ValidationException(f"{where}.name is required")
        if name in seen:
            raise ValidationException(f"{where}.name: the metric name '{name}' is used twice; names must be unique")
        seen.add(name)
        if method not in RATING_METHODS:
            raise ValidationException(f"{where}.ratingMethod '{method}' is not one of {', '.join(RATING_METHODS)}")
        if method in COMPARISON_METHODS and model_count != 2:
            raise ValidationException(f"{where}.ratingMethod {method} compares two responses, so it needs exactly "
                                      f"two models in inferenceConfig.models (the job has {model_count})")
        description = entry.get("description") or ""
        if not isinstance(description, str):
            raise ValidationException(f"{where}.description must be a string")
        metrics.append(Metric(name, description, method))
    return metrics


def _metrics_of(request: dict[str, Any]) -> list[Metric]:
    human = request.get("evaluationConfig", {}).get("human", {})
    return [Metric(m["name"], m.get("description") or "", m["ratingMethod"]) for m in human.get("customMetrics", [])]


def metrics_for(request: dict[str, Any], task_type: str, dataset: str) -> list[Metric]:
    """The custom metrics a dataset's items are rated on: its datasetMetricConfigs entry's metricNames
    (all custom metrics when the entry names none)."""
    metrics = _metrics_of(request)
    human = request.get("evaluationConfig", {}).get("human", {})
    for config in human.get("datasetMetricConfigs", []):
        if config.get("taskType") == task_type and (config.get("dataset") or {}).get("name") == dataset:
            names = config.get("metricNames") or []
            if names:
                return [m for m in metrics if m.name in names]
    return metrics


# -- values -------------------------------------------------------------------------------------


def whole_number(value: Any) -> int | None:
    """An int from an int or a string of ASCII digits; None for anything else (bools included).

    Not `str.isdigit()`: it is true of "²" and other Unicode digits that `int()` refuses. At most 18
    digits, so that `int()` never meets a string past its length limit either."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return int(value.strip())
    return None


def competition_ranks(ranks: list[int]) -> bool:
    """True when each rank is 1 + the number of strictly better ones (1,2 / 2,1 / 1,1 for two)."""
    return all(r == 1 + sum(other < r for other in ranks) for r in ranks)


def check_values(metrics: list[Metric], models: list[str], values: Any) -> dict[str, Any]:
    """The ratings of one item in model terms (see the module's table), or a ValidationException."""
    if not isinstance(values, dict):
        raise ValidationException("values must be an object with one entry per metric")
    names = {m.name for m in metrics}
    for name in values:
        if name not in names:
            raise ValidationException(f"values.{name}: this item is not rated on a metric of that name "
                                      f"(its metrics: {', '.join(sorted(names))})")
    checked: dict[str, Any] = {}
    for metric in metrics:
        where = f"values.{metric.name}"
        if metric.name not in values:
            raise ValidationException(f"{where} is missing: every metric needs a rating")
        value = values[metric.name]
        method = metric.rating_method
        if method in COMPARISON_METHODS and len(models) != 2:
            raise ValidationException(f"{where}: {method} needs an item with exactly two responses")
        if method in PER_RESPONSE_METHODS:
            if not isinstance(value, dict) or set(value) != set(models):
                raise ValidationException(f"{where}: {method} takes one value per response, keyed by model "
                                          f"({', '.join(models)})")
            if method == THUMBS:
                for model, v in value.items():
                    if v not in (UP, DOWN):
                        raise ValidationException(f"{where}.{model} must be '{UP}' or '{DOWN}', not {v!r}")
                checked[metric.name] = {m: value[m] for m in models}
            else:
                whole = {m: whole_number(value[m]) for m in models}
                low, high = (1, 5) if method == LIKERT else (1, len(models))
                for model, v in whole.items():
                    if v is None or not low <= v <= high:
                        raise ValidationException(f"{where}.{model} must be a whole number from {low} to {high}, "
                                                  f"not {value[model]!r}")
                if method == RANK and not competition_ranks(list(whole.values())):
                    raise ValidationException(f"{where}: ranks start at 1 for the best response; equal responses "
                                              f"share a rank (got {whole})")
                checked[metric.name] = whole
        elif method == COMPARISON_LIKERT:
            v = whole_number(value)
            if v is None or not 1 <= v <= 5:
                raise ValidationException(f"{where} must be a whole number from 1 (the first response is much "
                                          f"better) to 5 (the second is much better), not {value!r}")
            checked[metric.name] = v
        elif method == CHOICE:
            if value != TIE and value not in models:
                raise ValidationException(f"{where} must name the better response's model or be '{TIE}', "
                                          f"not {value!r}")
            checked[metric.name] = value
    return checked

