"""The report as one self-contained HTML page (templates/insights_report.html): charts as inline SVG
(outcrop.web.charts), then the tables.

Charts: requests and cost over time, satisfaction over time, live satisfaction by domain beside the
evaluation scores of the same category, latency percentiles and cost by group.
"""

from __future__ import annotations

import math
from typing import Any

from outcrop.insights.text import render
from outcrop.web import render as render_page
from outcrop.web.charts import svg


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def charts(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, inline SVG) for each chart the report has data for.

    Labels are the application's own text (domains, categories, model ids); the chart helper draws a `$` in
    them as a dollar sign, not as matplotlib's math text."""
    out = []
    trend = report["trend"]
    labels = [t["bucket"] for t in trend]
    step = max(1, len(labels) // 12)
    if trend:
        def requests_and_cost(fig) -> None:
            ax = fig.subplots()
            ax.bar(range(len(trend)), [t["requests"] for t in trend], color="#4c78a8", label="requests")
            ax.set_ylabel("requests")
            cost_ax = ax.twinx()
            cost_ax.plot(range(len(trend)), [t["cost"] for t in trend], color="#e45756", marker="o", label="cost")
            cost_ax.set_ylabel(f"cost ({report['currency']})")
            ax.set_xticks(range(0, len(labels), step), labels[::step], rotation=30, ha="right", fontsize=8)
            fig.legend(loc="upper left")

        def satisfaction(fig) -> None:
            ax = fig.subplots()
            ax.plot(range(len(trend)), [_nan(t["satisfaction"]["thumbsUpRate"]) for t in trend], marker="o",
                    label="thumbs-up rate")
            ax.plot(range(len(trend)), [_nan(t["satisfaction"]["csat"]) for t in trend], marker="s", label="CSAT")
            ax.set_ylim(0, 1.05)
            ax.set_xticks(range(0, len(labels), step), labels[::step], rotation=30, ha="right", fontsize=8)
            ax.legend()

        out.append((f"Requests and cost per {report['granularity']}", svg(requests_and_cost, (9, 3.2), tight=True)))
        out.append((f"Satisfaction per {report['granularity']}", svg(satisfaction, (9, 3.2), tight=True)))

    domains = report["crossDomain"]
    if domains:
        series: dict[str, list[float]] = {"thumbs-up rate": [_nan(d["thumbsUpRate"]) for d in domains],
                                          "CSAT": [_nan(d["csat"]) for d in domains]}
        for metric in sorted({m for d in domains for m in d["evaluation"]}):
            # one bar per evaluation metric: its mean over the evaluated models
            series[f"eval {metric}"] = [_nan(sum(d["evaluation"][metric].values()) / len(d["evaluation"][metric])
                                             if d["evaluation"].get(metric) else None) for d in domains]

        def by_domain(fig) -> None:
            ax = fig.subplots()
            width = 0.8 / len(series)
            for i, (name, values) in enumerate(series.items()):
                ax.bar([x + i * width for x in range(len(domains))], values, width, label=name)
            ax.set_xticks([x + 0.4 - width / 2 for x in range(len(domains))],
                          [d["domain"] or "(no domain)" for d in domains], rotation=20, ha="right")
            ax.legend(fontsize=8)

        out.append(("Live satisfaction by domain, evaluation scores by category", svg(by_domain, (9, 3.5), tight=True)))

    groups = [g for g in report["groups"] if g["requests"]]
    if groups:
        names = [str(g["key"] if g["key"] is not None else "(none)")[-40:] for g in groups]

        def latency_and_cost(fig) -> None:
            left, right = fig.subplots(1, 2)
            width = 0.27
            for i, p in enumerate(("p50", "p95", "p99")):
                left.bar([x + i * width for x in range(len(groups))],
                         [_nan(g["efficiency"]["latencyMs"][p]) for g in groups], width, label=p)
            left.set_ylabel("latency (ms)")
            left.set_xticks([x + width for x in range(len(groups))], names, rotation=20, ha="right", fontsize=8)
            left.legend()
            right.bar(range(len(groups)), [g["efficiency"]["cost"] for g in groups], color="#e45756")
            right.set_ylabel(f"cost ({report['currency']})")
            right.set_xticks(range(len(groups)), names, rotation=20, ha="right", fontsize=8)

        out.append((f"Latency and cost by {report['groupBy']}", svg(latency_and_cost, (10, 3.5), tight=True)))
    return out


def render_html(reports: list[dict[str, Any]]) -> str:
    """One page for one or more reports (the CLI reports every account with activity)."""
    return render_page("insights_report.html", reports=[
        {"accountId": report["accountId"], "since": report["since"], "until": report["until"],
         "groupBy": report["groupBy"], "charts": charts(report), "text": render(report)} for report in reports])
