"""The pages rendered from outcrop/web's templates: user text with markup shows as text in every page type."""

from __future__ import annotations

import pytest

from outcrop.api import rating
from outcrop.evaluation.human.items import Shown, TaskView
from outcrop.evaluation.human.methods import CHOICE, THUMBS, Metric
from outcrop.web import static, static_hash

EVIL = "<script>alert('x\"&')</script>"
ESCAPED = "&lt;script&gt;alert(&#39;x&#34;&amp;&#39;)&lt;/script&gt;"
SUMMARY = {"jobName": EVIL, "jobArn": f"arn:aws:bedrock:us-east-1:000000000000:evaluation-job/{EVIL}", "needed": 4,
           "ratings": 1, "percent": 25.0, "ratedByYou": 1, "leftForYou": 3, "items": 4, "status": "InProgress",
           "instructions": EVIL}


def _only_the_pages_script(page: str) -> None:
    """The one <script> is rating.js, whose hash the CSP allows; the hostile text is escaped everywhere."""
    assert page.lower().count("<script") == 1 and f"<script>{static('rating.js')}</script>" in page
    assert ESCAPED in page


def test_rater_pages_escape_user_text():
    view = TaskView("t1", "arn", 1, 4, EVIL, EVIL, EVIL, EVIL, EVIL,
                    [Shown("Response 1", "a", EVIL), Shown("Response 2", "b", EVIL)],
                    [Metric(EVIL, EVIL, THUMBS), Metric("pick", "", CHOICE)], ["a", "b"])
    pages = [rating._sign_in_page(EVIL, EVIL),
             rating._page(EVIL, EVIL, f"arn:aws:iam::000000000000:user/{EVIL}", back=True),
             rating._jobs_page("arn:aws:iam::000000000000:user/bob", [SUMMARY]),
             rating._done_page("arn:aws:iam::000000000000:user/bob", dict(SUMMARY, status=EVIL), EVIL),
             rating._task_page("arn:aws:iam::000000000000:user/bob", SUMMARY, view, EVIL, EVIL,
                               {"m0.1": "up", "comment": EVIL})]
    for page in pages:
        _only_the_pages_script(page)
    task = pages[-1]
    assert 'aria-label="&lt;script&gt;alert(&#39;x&#34;&amp;&#39;)&lt;/script&gt;, Response 1"' in task
    assert 'value="up" checked autofocus required' in task
    assert f">{ESCAPED}</textarea>" in task


def test_the_csp_allows_exactly_the_static_script():
    assert rating.SCRIPT_HASH == static_hash("rating.js")


def test_evaluation_report_escapes_user_text():
    from outcrop.evaluation.report import render_html

    metric = {"name": EVIL, "kind": "human", "description": EVIL, "range": [0, 1], "higherIsBetter": True,
              "scores": {EVIL: 0.5}, "counts": {EVIL: 2}, "byCategory": {EVIL: {EVIL: 0.5}, "b": {EVIL: 1.0}},
              "ratingMethod": EVIL, "distribution": {EVIL: {EVIL: 2}}}
    page = render_html({"jobName": EVIL, "jobArn": EVIL, "jobType": EVIL, "status": "Completed",
                        "createdAt": EVIL, "completedAt": None, "models": [EVIL], "evaluatorModel": EVIL,
                        "human": {"flowDefinitionArn": EVIL, "raters": [EVIL], "ratings": 2, "instructions": EVIL},
                        "tasks": [{"taskType": EVIL, "dataset": EVIL, "records": 2, "datasetSource": EVIL,
                                   "metrics": [metric]}]})
    assert "<script" not in page.lower() and ESCAPED in page
    assert page.count("<svg") == 3  # overview, categories, ratings


@pytest.mark.parametrize("domain", [EVIL])
def test_insights_report_escapes_user_text(domain, monkeypatch):
    from outcrop.insights import html

    monkeypatch.setattr(html, "render", lambda report: EVIL)
    report = {"accountId": EVIL, "since": EVIL, "until": EVIL, "groupBy": EVIL, "granularity": "day",
              "currency": "USD", "trend": [],
              "crossDomain": [{"domain": domain, "thumbsUpRate": 0.5, "csat": None, "evaluation": {}}],
              "groups": [{"key": EVIL, "requests": 1,
                          "efficiency": {"latencyMs": {"p50": 1, "p95": 2, "p99": 3}, "cost": 1.0}}]}
    page = html.render_html([report])
    assert "<script" not in page.lower() and ESCAPED in page
    assert page.count("<svg") == 2
