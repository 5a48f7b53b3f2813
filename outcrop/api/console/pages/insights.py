"""Insights: the five business metrics (satisfaction, ARPU, conversion, efficiency and its cost) over a period, by
model or by domain, live satisfaction by domain beside the evaluation scores, and the bill.

Everything comes from the insights API's GetReport as the signed-in principal (`outcrop:GetReport`). The page's
charts are drawn by console-insights.js with uPlot from the trend, which the page carries as a JSON data block
(not executed, so the CSP allows it); every number a chart shows is in a table too. The standalone report (the
CLI's HTML, its charts inline SVG drawn by matplotlib, with inline styles) is served on its own page under the
reports' CSP.
"""

from __future__ import annotations

import re
import urllib.parse
from datetime import UTC, date, datetime, timedelta
from typing import Any

from outcrop.api.console.app import REPORT_CSP, Visit, page
from outcrop.api.sessions import Response
from outcrop.errors import ValidationException
from outcrop.insights import html as insights_html

GROUPINGS = (("model", "Model"), ("domain", "Domain (requestMetadata.domain)"))
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def report_request(query: dict[str, str]) -> dict[str, Any]:
    """GetReport's body from the period form. A date's `until` is the end of that day (the form's dates are
    inclusive; the API's period is [since, until)); anything else (a duration such as 7d, an ISO time) goes to
    the API as typed, and the API says what it accepts. Empty fields leave the API's defaults."""
    body: dict[str, Any] = {"groupBy": query.get("groupBy") or "model"}
    since, until = query.get("since", "").strip(), query.get("until", "").strip()
    if since:
        body["since"] = since
    if until:
        body["until"] = _end_of(until)
    return body


def _end_of(day: str) -> str:
    if not _DAY.fullmatch(day):
        return day
    try:
        return (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    except ValueError:  # 2025-02-30: the API names it
        return day


def _bucket_time(label: str) -> int:
    """A trend bucket's label ('YYYY-MM-DD' or 'YYYY-MM-DD HH', UTC) as Unix seconds, uPlot's time axis."""
    shape = "%Y-%m-%d %H" if " " in label else "%Y-%m-%d"
    return int(datetime.strptime(label, shape).replace(tzinfo=UTC).timestamp())


def chart_data(report: dict[str, Any]) -> dict[str, Any]:
    """What console-insights.js draws: the trend as columns."""
    trend = report["trend"]
    return {"currency": report["currency"], "granularity": report["granularity"],
            "time": [_bucket_time(t["bucket"]) for t in trend], "requests": [t["requests"] for t in trend],
            "cost": [t["cost"] for t in trend],
            "thumbsUpRate": [t["satisfaction"]["thumbsUpRate"] for t in trend],
            "csat": [t["satisfaction"]["csat"] for t in trend]}


def _report(visit: Visit) -> dict[str, Any]:
    return visit.call_json("insights", "GetReport", report_request(visit.query))


@page("GET", "insights")
def dashboard(visit: Visit) -> Response:
    values = {"since": visit.query.get("since", ""), "until": visit.query.get("until", ""),
              "groupBy": visit.query.get("groupBy") or "model"}
    try:
        report = _report(visit)
    except ValidationException as exc:  # a period the API refuses: the form again, in the API's words
        return visit.render("insights.html", "Insights", status=exc.status, values=values, groupings=GROUPINGS,
                            error=f"{exc.code}: {exc.message}", report=None, data={}, query="")
    query = urllib.parse.urlencode({k: v for k, v in values.items() if v})
    return visit.render("insights.html", "Insights", values=values, groupings=GROUPINGS, error="", report=report,
                        data=chart_data(report), query=query)


@page("GET", "insights/report")
def standalone(visit: Visit) -> Response:
    """The CLI's HTML report of the same period: inline CSS and SVG, no script, printable."""
    page_html = insights_html.render_html([_report(visit)])
    return Response(200, page_html, [("content-security-policy", REPORT_CSP)])
