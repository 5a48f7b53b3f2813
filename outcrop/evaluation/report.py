"""An evaluation job's report: the summary as JSON, as one self-contained HTML page, and as a terminal table.

The summary is the dict the evaluation job builds (see `validate_summary` for its shape). The HTML page has no
external assets and no JavaScript, so it can be mailed, archived next to the job's outputs and printed; its charts
are inline SVG drawn by matplotlib (outcrop.web.charts), the page is web/templates/evaluation_report.html.
Every number a chart shows is also in a table: charts are for seeing, tables
for reading (and for screen readers). Model ids, dataset names and categories are user data, so every string from
the summary is escaped on its way into the page (the template autoescapes).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

from outcrop.platform import jsontext
from outcrop.web import Markup, render
from outcrop.web.charts import svg

KINDS = {"automatic", "judge", "human"}
# Okabe-Ito: distinguishable with colour blindness; the hatch keeps the two models apart when printed in grey.
COLOURS = ["#0072B2", "#E69F00"]
HATCHES = ["", "//"]
TIE_COLOUR = "#A0A0A0"
NA = "n/a"


# ---------------------------------------------------------------- numbers, shared by the page and the terminal


def _number(value: Any) -> float | None:
    """A score as a float, or None: a metric that produced NaN has no score, and JSON cannot carry NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def format_score(value: Any, metric: dict[str, Any]) -> str:
    """Three decimals on a 0-1 scale, two on wider ones (Likert, BLEU's 0-100, perplexity)."""
    number = _number(value)
    if number is None:
        return NA
    low, high = _range(metric)
    return f"{number:.3f}" if high is not None and high - low <= 1 else f"{number:.2f}"


def format_interval(interval: Any, metric: dict[str, Any]) -> str:
    """`[low, high]` in the score's own format; empty where the job gave no interval."""
    if not isinstance(interval, list | tuple) or len(interval) != 2 or None in map(_number, interval):
        return ""
    return f"[{format_score(interval[0], metric)}, {format_score(interval[1], metric)}]"


def format_difference(value: Any, metric: dict[str, Any]) -> str:
    number = _number(value)
    return NA if number is None else ("+" if number >= 0 else "-") + format_score(abs(number), metric)


def format_p(value: Any) -> str:
    number = _number(value)
    if number is None:
        return NA
    return f"{number:.4f}" if number >= 0.0001 else "< 0.0001"


def verdict(comparison: dict[str, Any], metric: dict[str, Any], confidence: float) -> str:
    """One sentence a person can act on: who is better on this metric, by how much, and how sure that is."""
    baseline, candidate = str(comparison.get("baseline", "")), str(comparison.get("candidate", ""))
    interval = comparison.get("interval")
    how_sure = (f"difference {format_difference(comparison.get('difference'), metric)}"
                + (f", {confidence * 100:g}% interval {format_interval(interval, metric)}" if interval else "")
                + f", p {_p_clause(comparison.get('pValue'))}, adjusted {_p_clause(comparison.get('pAdjusted'))}")
    counts = [c for c in (metric.get("counts") or {}).values() if isinstance(c, int)]
    pairs = comparison.get("pairs")
    if isinstance(pairs, int) and counts and pairs < max(counts):
        how_sure += f", on the {format_count(pairs)} records scored for both"
    better = comparison.get("better")
    if better:
        other = baseline if better == candidate else candidate
        return f"{_short(better)} is better than {_short(other)} ({how_sure})"
    return f"no significant difference between {_short(candidate)} and {_short(baseline)} ({how_sure})"


def _with_interval(metric: dict[str, Any], category: str, model: str) -> str:
    """A category's score, and its interval when the job gave one."""
    score = format_score(((metric.get("byCategory") or {}).get(category) or {}).get(model), metric)
    interval = format_interval(((metric.get("byCategoryIntervals") or {}).get(category) or {}).get(model), metric)
    return f"{score} {interval}" if interval else score


def _p_clause(value: Any) -> str:
    text = format_p(value)
    return text if text.startswith("<") else f"= {text}"


def format_share(value: Any) -> str:
    number = _number(value)
    return NA if number is None else f"{number * 100:.1f}%"


def format_count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else NA


def format_range(metric: dict[str, Any], ascii_only: bool = False) -> str:
    low, high = _range(metric)
    low_text = f"{low:g}"
    if high is None:
        return f">={low_text}" if ascii_only else f"≥ {low_text}"
    return f"{low_text}-{high:g}" if ascii_only else f"{low_text}–{high:g}"


def _range(metric: dict[str, Any]) -> tuple[float, float | None]:
    low, high = (list(metric.get("range") or [0, None]) + [None])[:2]
    return (_number(low) or 0.0), _number(high)


def better_model(metric: dict[str, Any], models: list[str]) -> str | None:
    """The better of two models: the paired test's verdict where the job compared them (None when the difference
    is not significant), else the better aggregate by the metric's direction; None with one model, a tie or a
    gap."""
    if len(models) != 2:
        return None
    for comparison in metric.get("comparisons") or []:
        if {comparison.get("baseline"), comparison.get("candidate")} == set(models):
            return comparison.get("better")
    scores = [_number((metric.get("scores") or {}).get(model)) for model in models]
    if None in scores or scores[0] == scores[1]:
        return None
    first_wins = (scores[0] > scores[1]) == bool(metric.get("higherIsBetter", True))
    return models[0] if first_wins else models[1]


def _short(text: str, limit: int = 40) -> str:
    """Short labels for charts and terminal headers: an ARN's or a path's tail is what tells two models apart."""
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def _unparseable(metric: dict[str, Any]) -> dict[str, int]:
    return {model: n for model, n in (metric.get("unparseable") or {}).items() if isinstance(n, int) and n > 0}


def _labels(distribution: dict[str, dict[str, int]]) -> list[str]:
    """Rating labels in the order the job gave them (1..5, thumbs up/down), across every model."""
    return list(dict.fromkeys(label for counts in distribution.values() for label in counts))


# ---------------------------------------------------------------- JSON


def render_json(summary: dict[str, Any]) -> bytes:
    """report.json: sorted and indented so two reports diff cleanly; NaN becomes null (strict JSON has no NaN)."""
    text = json.dumps(jsontext.finite(summary), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode()


def validate_summary(summary: dict[str, Any]) -> None:
    """Raises ValueError naming the first field that breaks the shape the renderers rely on.

    The job calls this before storing a summary, so a drift between the job and this module fails there, with a
    path, rather than as a half-drawn page later.
    """
    def need(ok: bool, where: str, what: str) -> None:
        if not ok:
            raise ValueError(f"report summary: {where}: {what}")

    need(isinstance(summary, dict), "summary", "must be an object")
    for key in ("jobName", "jobArn", "jobType", "status", "createdAt"):
        need(isinstance(summary.get(key), str), key, "must be a string")
    models = summary.get("models")
    need(isinstance(models, list) and 1 <= len(models) <= 2 and all(isinstance(m, str) for m in models),
         "models", "must list one or two model identifiers")
    need(isinstance(summary.get("tasks"), list), "tasks", "must be a list")
    for t, task in enumerate(summary["tasks"]):
        need(isinstance(task, dict) and isinstance(task.get("metrics"), list), f"tasks[{t}]", "needs a metrics list")
        for m, metric in enumerate(task["metrics"]):
            where = f"tasks[{t}].metrics[{m}]"
            need(isinstance(metric, dict) and isinstance(metric.get("name"), str), where, "needs a name")
            need(metric.get("kind") in KINDS, f"{where}.kind", f"must be one of {sorted(KINDS)}")
            bounds = metric.get("range")
            need(isinstance(bounds, list) and len(bounds) == 2 and _number(bounds[0]) is not None
                 and (bounds[1] is None or _number(bounds[1]) is not None), f"{where}.range",
                 "must be [low, high or null]")
            need(isinstance(metric.get("higherIsBetter"), bool), f"{where}.higherIsBetter", "must be a boolean")
            need(isinstance(metric.get("scores"), dict), f"{where}.scores", "must map model to score")
            for key in ("counts", "byCategory", "unparseable", "distribution", "winRates", "intervals",
                        "byCategoryIntervals"):
                need(isinstance(metric.get(key, {}), dict), f"{where}.{key}", "must be an object")
            for model, interval in (metric.get("intervals") or {}).items():
                need(interval is None or (isinstance(interval, list) and len(interval) == 2),
                     f"{where}.intervals.{model}", "must be [low, high] or null")
            need(isinstance(metric.get("comparisons", []), list), f"{where}.comparisons", "must be a list")
            for c, comparison in enumerate(metric.get("comparisons") or []):
                need(isinstance(comparison, dict) and all(isinstance(comparison.get(k), str)
                                                          for k in ("baseline", "candidate"))
                     and _number(comparison.get("pValue")) is not None, f"{where}.comparisons[{c}]",
                     "needs baseline, candidate and pValue")


# ---------------------------------------------------------------- terminal


def _grid(headers: list[str], rows: list[list[str]], indent: str = "") -> list[str]:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return indent + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), indent + "  ".join("-" * w for w in widths), *(line(row) for row in rows)]


def text_table(summary: dict[str, Any]) -> str:
    """The report's numbers for `outcrop eval report`: `*` marks the better model, `n=` the records scored."""
    models = list(summary.get("models") or [])
    out = [f"Evaluation job {summary.get('jobName', '')} ({summary.get('jobType', '')}, {summary.get('status', '')})"]
    # Column headers keep the tail of a long id (an ARN's model name); the full ids are listed once, here.
    heads = [_short(model) for model in models]
    out += [f"Model {i}: {model}" for i, model in enumerate(models, start=1)]
    if summary.get("evaluatorModel"):
        out.append(f"Judge model: {summary['evaluatorModel']}")
    out.append(f"Created {summary.get('createdAt') or NA}, completed {summary.get('completedAt') or NA}")
    statistics = summary.get("statistics") or {}
    confidence = _number(statistics.get("confidence")) or 0.95
    if statistics:
        out.append(f"Scores show [{confidence * 100:g}% intervals]: {statistics.get('signature', '')}")
    if summary.get("human"):
        human = summary["human"]
        out.append(f"Human ratings: {format_count(human.get('ratings'))} by {len(human.get('raters') or [])} raters")
    for task in summary.get("tasks") or []:
        metrics = task.get("metrics") or []
        out += ["", f"{task.get('taskType', '')} on {task.get('dataset', '')} ({format_count(task.get('records'))} "
                "records)" + (f", from {task['datasetSource']}" if task.get("datasetSource") else "")]
        rows = []
        for metric in metrics:
            best = better_model(metric, models)
            cells = [metric.get("name", ""), metric.get("kind", ""), format_range(metric, ascii_only=True),
                     "higher" if metric.get("higherIsBetter", True) else "lower"]
            for model in models:
                score = format_score((metric.get("scores") or {}).get(model), metric)
                interval = format_interval((metric.get("intervals") or {}).get(model), metric)
                count = (metric.get("counts") or {}).get(model)
                cells.append(score + (f" {interval}" if interval else "")
                             + (f" (n={format_count(count)})" if count is not None else "")
                             + (" *" if model == best else ""))
            rows.append(cells)
        out += _grid(["metric", "kind", "range", "better", *heads], rows, "  ")
        compared = [(metric, c) for metric in metrics for c in metric.get("comparisons") or []]
        if compared:
            out += ["", "  Compared (paired tests, p adjusted for every comparison of the job):"]
            out += [f"  {metric.get('name', '')}: {verdict(c, metric, confidence)}" for metric, c in compared]
        for metric in metrics:
            name = metric.get("name", "")
            if bad := _unparseable(metric):
                out.append(f"  {name}: unparseable judge verdicts: "
                           + ", ".join(f"{model} {format_count(n)}" for model, n in bad.items()))
            if by_category := metric.get("byCategory") or {}:
                out += ["", f"  {name} by category"]
                out += _grid(["category", *heads], [[str(category)] + [_with_interval(metric, category, m)
                                                                        for m in models]
                                                     for category in by_category], "    ")
            if wins := metric.get("winRates") or {}:
                out += ["", f"  {name} win rates"]
                columns = [*models, "tie"]
                out += _grid([*heads, "tie"], [[format_share(wins.get(c)) for c in columns]], "    ")
            if distribution := metric.get("distribution") or {}:
                out += ["", f"  {name} ratings"]
                out += _grid(["rating", *heads], [[label] + [format_count((distribution.get(m) or {}).get(label, 0))
                                                              for m in models] for label in _labels(distribution)],
                             "    ")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- charts


#: matplotlib settings of every chart here (math text is off in every chart: see outcrop.web.charts).
CHART_SETTINGS = {
    "svg.fonttype": "none",               # text stays text: smaller, selectable, sharp when printed
    "svg.hashsalt": "outcrop-report",     # hashed ids are stable, so the same summary gives the same page
    "font.size": 9,
    "font.family": ["DejaVu Sans", "sans-serif"],
}


def _svg(draw: Callable[[Any], None], size: tuple[float, float], title: str, number: int) -> Markup:
    """One chart (`draw` gets its one axes) as an inline <svg> with a <title>, its ids prefixed `chart<number>-`."""
    return svg(lambda figure: draw(figure.add_subplot()), size, settings=CHART_SETTINGS, layout="constrained",
               metadata={"Date": None}, title=title, number=number)


def _legend(axes: Any, columns: int) -> None:
    # A figure legend "outside" is one constrained layout makes room for; one anchored to the axes can run off the
    # figure's edge when long metric names push the axes right.
    axes.get_figure().legend(loc="outside upper left", ncols=columns, frameon=False, fontsize=8)


def _bars(axes: Any, groups: list[str], series: list[tuple[str, list[float | None], list[str]]],
          limit: float) -> None:
    """Horizontal grouped bars, groups top to bottom, each bar labelled with its value (or n/a)."""
    height = 0.8 / max(len(series), 1)
    for j, (label, values, texts) in enumerate(series):
        ys = [i - 0.4 + height * (j + 0.5) for i in range(len(groups))]
        widths = [0.0 if v is None else max(v, 0.0) for v in values]
        axes.barh(ys, widths, height=height * 0.92, label=_short(label), color=COLOURS[j % 2],
                  hatch=HATCHES[j % 2], edgecolor="white" if j % 2 == 0 else "#5a3d00", linewidth=0.4)
        for y, width, text in zip(ys, widths, texts, strict=True):
            axes.text(width + limit * 0.01, y, text, va="center", fontsize=8)
    axes.set_yticks(range(len(groups)), labels=[_short(g, 48) for g in groups])
    axes.set_ylim(len(groups) - 0.5, -0.5)
    axes.set_xlim(0, limit * 1.15)  # room for the value labels
    axes.grid(axis="x", alpha=0.3)
    axes.set_axisbelow(True)
    axes.spines[["top", "right"]].set_visible(False)
    if series:
        _legend(axes, 2)


def _overview_chart(metrics: list[dict[str, Any]], models: list[str], number: int) -> str | None:
    """Every bounded metric of a task on one axis, each scaled to its own range (0 = low end, 1 = high end)."""
    bounded = [m for m in metrics if _range(m)[1] is not None and _range(m)[1] > _range(m)[0]]
    if not bounded:
        return None

    def scaled(metric: dict[str, Any], model: str) -> float | None:
        low, high = _range(metric)
        value = _number((metric.get("scores") or {}).get(model))
        return None if value is None else min(max((value - low) / (high - low), 0.0), 1.0)

    names = [m.get("name", "") + ("" if m.get("higherIsBetter", True) else " (lower is better)") for m in bounded]
    series = [(model, [scaled(m, model) for m in bounded],
               [format_score((m.get("scores") or {}).get(model), m) for m in bounded]) for model in models]

    def draw(axes: Any) -> None:
        _bars(axes, names, series, 1.0)
        axes.set_xlabel("score as a share of the metric's range (labels show the score itself)")

    title = "Scores per metric and model, each scaled to its metric's range"
    return _svg(draw, (8, 1.0 + 0.32 * len(bounded) * len(models)), title, number)


def _category_chart(metric: dict[str, Any], models: list[str], number: int) -> str:
    by_category = metric["byCategory"]
    categories = [str(c) for c in by_category]
    low, high = _range(metric)
    values = [_number(scores.get(m)) for scores in by_category.values() for m in models]
    limit = high if high is not None else max([v for v in values if v is not None] or [low + 1.0])
    span = (limit - low) or 1.0
    series = [(model, [None if (v := _number(s.get(model))) is None else v - low for s in by_category.values()],
               [format_score(s.get(model), metric) for s in by_category.values()]) for model in models]

    def draw(axes: Any) -> None:
        _bars(axes, categories, series, span)
        ticks = axes.get_xticks()
        axes.set_xticks(ticks, labels=[f"{t + low:g}" for t in ticks])
        axes.set_xlim(0, span * 1.15)
        axes.set_xlabel(metric.get("name", "") + ("" if metric.get("higherIsBetter", True) else " (lower is better)"))

    title = f"{metric.get('name', '')} by category"
    return _svg(draw, (8, 1.0 + 0.3 * len(categories) * len(models)), title, number)


def _win_chart(metrics: list[dict[str, Any]], models: list[str], number: int) -> str:
    columns = [*models, "tie"]

    def draw(axes: Any) -> None:
        names = [m.get("name", "") for m in metrics]
        left = [0.0] * len(metrics)
        for j, column in enumerate(columns):
            shares = [_number((m.get("winRates") or {}).get(column)) or 0.0 for m in metrics]
            colour, hatch = (TIE_COLOUR, "") if column == "tie" else (COLOURS[j % 2], HATCHES[j % 2])
            axes.barh(range(len(metrics)), shares, left=left, height=0.6, color=colour, hatch=hatch,
                      edgecolor="white", linewidth=0.4, label=_short(column) if column != "tie" else "tie")
            for i, share in enumerate(shares):
                if share >= 0.06:  # a label in a sliver would overflow it; the table has every share
                    axes.text(left[i] + share / 2, i, format_share(share), ha="center", va="center", fontsize=8)
            left = [a + b for a, b in zip(left, shares, strict=True)]
        axes.set_yticks(range(len(metrics)), labels=[_short(n, 48) for n in names])
        axes.set_ylim(len(metrics) - 0.5, -0.5)
        axes.set_xlim(0, 1)
        axes.set_xlabel("share of comparisons won")
        axes.spines[["top", "right"]].set_visible(False)
        _legend(axes, 3)

    return _svg(draw, (8, 1.2 + 0.45 * len(metrics)), "Win rates per comparison metric", number)


def _difference_chart(compared: list[tuple[dict[str, Any], dict[str, Any]]], number: int) -> str | None:
    """A forest plot: each comparison's improvement of the candidate over the baseline with its interval, as a
    share of the metric's range, so that right of zero always means "the candidate is better"."""
    drawn = []
    for metric, comparison in compared:
        low, high = _range(metric)
        difference = _number(comparison.get("difference"))
        if high is None or high <= low or difference is None:
            continue
        sign = 1.0 if metric.get("higherIsBetter", True) else -1.0
        span = (high - low) / sign
        interval = comparison.get("interval") or [difference, difference]
        ends = sorted(v / span for v in interval)
        drawn.append((metric.get("name", ""), difference / span, ends, bool(comparison.get("significant"))))
    if not drawn:
        return None
    baseline, candidate = (_short(str(compared[0][1].get(k, ""))) for k in ("baseline", "candidate"))

    def draw(axes: Any) -> None:
        for i, (_, centre, (left, right), significant) in enumerate(drawn):
            colour = COLOURS[1] if significant else TIE_COLOUR
            axes.plot([left, right], [i, i], color=colour, linewidth=2, solid_capstyle="butt")
            axes.plot([centre], [i], marker="o", markersize=6, color=colour,
                      markerfacecolor=colour if significant else "white")
        axes.axvline(0, color="#333333", linewidth=0.8)
        axes.set_yticks(range(len(drawn)), labels=[_short(name, 48) for name, *_ in drawn])
        axes.set_ylim(len(drawn) - 0.5, -0.5)
        reach = max(max(abs(left), abs(right), abs(centre)) for _, centre, (left, right), _ in drawn) or 0.05
        axes.set_xlim(-reach * 1.15, reach * 1.15)
        axes.set_xlabel("the candidate's improvement over the baseline, as a share of the metric's range")
        axes.grid(axis="x", alpha=0.3)
        axes.spines[["top", "right"]].set_visible(False)

    title = f"{candidate} against {baseline}: differences with their intervals (filled: significant)"
    return _svg(draw, (8, 1.2 + 0.4 * len(drawn)), title, number)


def _distribution_chart(metric: dict[str, Any], models: list[str], number: int) -> str:
    distribution = metric["distribution"]
    labels = _labels(distribution)

    from matplotlib.ticker import MaxNLocator

    def draw(axes: Any) -> None:
        width = 0.8 / len(models)
        for j, model in enumerate(models):
            counts = [(distribution.get(model) or {}).get(label, 0) for label in labels]
            xs = [i - 0.4 + width * (j + 0.5) for i in range(len(labels))]
            bars = axes.bar(xs, counts, width=width * 0.92, color=COLOURS[j % 2], hatch=HATCHES[j % 2],
                            edgecolor="white" if j % 2 == 0 else "#5a3d00", linewidth=0.4, label=_short(model))
            axes.bar_label(bars, labels=[format_count(c) for c in counts], fontsize=8)
        axes.set_xticks(range(len(labels)), labels=[_short(label, 24) for label in labels])
        axes.set_ylabel("ratings")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 2.5 ratings
        axes.margins(y=0.15)
        axes.spines[["top", "right"]].set_visible(False)
        _legend(axes, 2)

    return _svg(draw, (8, 2.8), f"{metric.get('name', '')}: distribution of ratings", number)


# ---------------------------------------------------------------- HTML (web/templates/evaluation_report.html)


def _metric_row(metric: dict[str, Any], models: list[str]) -> dict[str, Any]:
    best = better_model(metric, models)
    cells = []
    for model in models:
        count = (metric.get("counts") or {}).get(model)
        cells.append({"score": format_score((metric.get("scores") or {}).get(model), metric), "best": model == best,
                      "count": format_count(count) if count is not None else None,
                      "interval": format_interval((metric.get("intervals") or {}).get(model), metric)})
    return {"name": metric.get("name", ""), "description": metric.get("description") or "",
            "kind": str(metric.get("kind", "")), "range": format_range(metric),
            "direction": "higher" if metric.get("higherIsBetter", True) else "lower", "cells": cells,
            "unparseable": [(model, format_count(n)) for model, n in _unparseable(metric).items()],
            "rating_method": metric.get("ratingMethod") or ""}


def _task_section(index: int, task: dict[str, Any], models: list[str], chart_numbers: Iterator[int],
                  confidence: float) -> dict[str, Any]:
    """What the template shows of one task; the charts are drawn here, numbered in the order the page has them."""
    metrics = task.get("metrics") or []
    section: dict[str, Any] = {
        "index": index, "heading": f"{task.get('taskType', '')} on {task.get('dataset', '')}",
        "records": format_count(task.get("records")), "source": task.get("datasetSource") or "",
        "metrics": [_metric_row(metric, models) for metric in metrics]}
    if not metrics:
        return section
    unbounded = [m.get("name", "") for m in metrics if _range(m)[1] is None]
    caption = "Each bar is a score scaled to its metric's range, so metrics with different scales share one axis."
    if unbounded:
        caption += " Not drawn (no upper bound): " + ", ".join(unbounded) + "."
    section["overview"] = _overview_chart(metrics, models, next(chart_numbers))
    section["overview_caption"] = caption

    compared = [(metric, c) for metric in metrics for c in metric.get("comparisons") or []]
    section["tests"] = {
        "rows": [{"name": metric.get("name", ""), "verdict": verdict(c, metric, confidence),
                  "difference": format_difference(c.get("difference"), metric),
                  "interval": format_interval(c.get("interval"), metric), "p": format_p(c.get("pValue")),
                  "adjusted": format_p(c.get("pAdjusted")), "significant": bool(c.get("significant")),
                  "test": str(c.get("test", ""))} for metric, c in compared],
        "svg": _difference_chart(compared, next(chart_numbers)),
        "baseline": str(compared[0][1].get("baseline", "")) if compared else "",
        "candidate": str(compared[0][1].get("candidate", "")) if compared else ""} if compared else None

    section["categories"] = []
    for metric in metrics:
        if by_category := metric.get("byCategory") or {}:
            section["categories"].append({
                "name": metric.get("name", ""),
                "rows": [(str(category), [_with_interval(metric, category, m) for m in models])
                         for category in by_category],
                "svg": _category_chart(metric, models, next(chart_numbers)) if len(by_category) >= 2 else None})

    compared = [m for m in metrics if m.get("winRates")]
    section["compared"] = {
        "rows": [(m.get("name", ""), [format_share(m["winRates"].get(c)) for c in [*models, "tie"]])
                 for m in compared],
        "svg": _win_chart(compared, models, next(chart_numbers))} if compared else None

    section["distributions"] = []
    for metric in metrics:
        if distribution := metric.get("distribution") or {}:
            section["distributions"].append({
                "name": metric.get("name", ""),
                "rows": [(label, [format_count((distribution.get(m) or {}).get(label, 0)) for m in models])
                         for label in _labels(distribution)],
                "svg": _distribution_chart(metric, models, next(chart_numbers))})
    return section


def _header(summary: dict[str, Any]) -> dict[str, Any]:
    human = summary.get("human") or {}
    return {"job_name": summary.get("jobName", ""), "job_arn": summary.get("jobArn", ""),
            "job_type": summary.get("jobType", ""), "status": summary.get("status", ""),
            "models": summary.get("models") or [], "evaluator": summary.get("evaluatorModel") or "",
            "times": [("Created", summary.get("createdAt")), ("Completed", summary.get("completedAt"))],
            "statistics": _statistics_line(summary.get("statistics") or {}),
            "human": {"flow": human.get("flowDefinitionArn", ""), "raters": human.get("raters") or [],
                      "ratings": format_count(human.get("ratings")),
                      "instructions": human.get("instructions") or ""} if human else None}


def _statistics_line(statistics: dict[str, Any]) -> dict[str, str] | None:
    if not statistics:
        return None
    confidence = _number(statistics.get("confidence")) or 0.95
    resamples = format_count(statistics.get("resamples"))
    return {"text": f"{confidence * 100:g}% percentile bootstrap intervals ({resamples} resamples, seed "
                    f"{statistics.get('seed')}); paired tests, {statistics.get('correction', '')}, significant "
                    f"below {statistics.get('alpha')}", "signature": str(statistics.get("signature", ""))}


def render_html(summary: dict[str, Any]) -> str:
    """The whole report as one HTML page: header, then per task a table, its charts and their tables."""
    models = [str(m) for m in summary.get("models") or []]
    chart_numbers = itertools.count(1)
    confidence = _number((summary.get("statistics") or {}).get("confidence")) or 0.95
    sections = [_task_section(i, task, models, chart_numbers, confidence)
                for i, task in enumerate(summary.get("tasks") or [], start=1)]
    return render("evaluation_report.html", header=_header(summary), models=models, sections=sections, na=NA)
