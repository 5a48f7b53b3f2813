"""The insights dashboard: the period form, the metrics by model and by domain, the bill, the charts' data, the
printable report, and a principal without outcrop:GetReport. Invocations are put in the usage table as the runtime
records them; feedback and revenue arrive through the insights service, as the API records them."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta

from outcrop.api.console.app import CSP, REPORT_CSP
from outcrop.iam.principal import Principal
from outcrop.runtime.tables import UsageRecord

MODEL = "huggingface.smollm2-135m-instruct-v1:0"


def _traffic(services) -> None:
    """Two invocations an hour ago (one per domain), a thumbs up and a 5 on the first, a payment by its user."""
    account = services.iam.default_account()
    at = datetime.now(UTC) - timedelta(hours=1)
    with services.db.session() as session:
        for i, domain in enumerate(("billing", "support")):
            session.add(UsageRecord(request_id=f"req-{i}", account_id=account, model_id=MODEL,
                                    principal_arn=f"arn:aws:iam::{account}:root", operation="Converse",
                                    input_tokens=1000, output_tokens=500,
                                    latency_ms=400 + 100 * i, first_token_ms=50, stop_reason="end_turn",
                                    status="Success", created_at=at,
                                    request_metadata={"userId": f"user-{i}", "sessionId": f"s-{i}", "domain": domain}))
    root = Principal.account_root(account)
    services.insights.record_feedback(root, {"requestId": "req-0", "thumbs": "up", "rating": 5})
    services.insights.record_revenue(root, {"userId": "user-0", "amount": 12.5})


def _data(page) -> dict:
    found = re.search(r'<script type="application/json" id="insights-data">(.*?)</script>', page.body, re.S)
    return json.loads(found.group(1))


def test_the_dashboard_shows_the_metrics_by_model_the_bill_and_the_trend(root, services):
    _traffic(services)
    today = datetime.now(UTC).date()
    page = root.get(f"insights?since={today - timedelta(days=1)}&until={today}&groupBy=model")
    assert page.status == 200 and page.headers["content-security-policy"] == CSP
    body = html.unescape(page.body)
    assert f"<code>{MODEL}</code>" in body and "100.0% thumbs up (1 up, 0 down)" in body
    assert "6.25 USD (12.50 from 2 active users)" in body  # the revenue over the users active in the period
    assert "p50 400 ms" in body and "Total: " in body
    assert 'id="bill-total"' in page.body and "2,000" in body  # the bill's line: both requests' input tokens
    data = _data(page)
    assert sum(data["requests"]) == 2 and len(data["time"]) == 48  # two days, by the hour ("until" is inclusive)
    assert data["granularity"] == "hour" and 1.0 in data["thumbsUpRate"]
    assert "console-insights.js" in page.body and "vendor/uplot/uPlot.iife.min.js" in page.body
    assert "<style" not in page.body and 'style="' not in page.body  # the console's CSP allows neither


def test_grouped_by_domain_and_a_period_the_api_refuses(root, services):
    _traffic(services)
    by_domain = root.get("insights?groupBy=domain")
    assert by_domain.status == 200 and "<code>billing</code>" in by_domain.body
    assert "<code>support</code>" in by_domain.body and "By domain" in by_domain.body
    empty = root.get("insights?since=2025-03-02&until=2025-03-01")
    assert empty.status == 400 and empty.errors()[0].startswith("ValidationException: The period is empty")
    assert 'value="2025-03-02"' in empty.body  # the form keeps what was asked
    nonsense = root.get("insights?groupBy=user")
    assert nonsense.status == 400 and "groupBy must be one of model, domain" in nonsense.errors()[0]


def test_the_printable_report_has_the_reports_csp(root, services):
    _traffic(services)
    report = root.get("insights/report?groupBy=model")
    assert report.status == 200 and report.headers["content-security-policy"] == REPORT_CSP
    assert "<svg" in report.body and MODEL in report.body


def test_a_user_without_get_report_is_denied(user_browser):
    catalog_only = user_browser("no-insights", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "bedrock:ListFoundationModels", "Resource": "*"}]})
    denied = catalog_only.get("insights")
    assert denied.status == 403 and "outcrop:GetReport" in denied.body
    assert catalog_only.get("insights/report").status == 403
