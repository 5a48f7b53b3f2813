"""A batch job's records are billed at the batch price (half of on-demand unless the price table says otherwise),
in lines of their own, and are not the application's live traffic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from outcrop.catalog.prices import PriceTable
from outcrop.iam.principal import Principal
from outcrop.insights.report import build_report
from outcrop.insights.text import render
from outcrop.runtime.service import Caller
from outcrop.runtime.tables import UsageRecord
from outcrop.runtime.usage import record_usage

A = "111111111111"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
JOB = f"arn:aws:bedrock:us-east-1:{A}:model-invocation-job/abcdefabcdef"
PRICES = """
currency = "USD"
[defaults.on_demand]
input_per_1k_tokens = 0.001
output_per_1k_tokens = 0.002
[defaults.batch]
on_demand_share = 0.5
[defaults.provisioned]
no_commitment_per_mu_hour = 2.0
one_month_per_mu_hour = 1.5
six_months_per_mu_hour = 1.1
[models."m-b".batch]
input_per_1k_tokens = 0.0001
output_per_1k_tokens = 0.0001
"""


@pytest.fixture
def prices(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    return PriceTable.load(path)


def usage(request_id, model, tokens_in, tokens_out, at, batch=None, meta=None):
    return UsageRecord(request_id=request_id, account_id=A, principal_arn=f"arn:aws:iam::{A}:root", model_id=model,
                       operation="InvokeModel", input_tokens=tokens_in, output_tokens=tokens_out, latency_ms=100,
                       first_token_ms=10, stop_reason="end_turn", status="Success", request_metadata=meta,
                       batch_job_arn=batch, created_at=at)


def test_the_price_table_has_a_batch_price():
    table = PriceTable.load()
    on_demand = table.on_demand("huggingface.smollm2-135m-instruct-v1:0")
    assert table.batch("huggingface.smollm2-135m-instruct-v1:0") == pytest.approx((on_demand[0] / 2, on_demand[1] / 2))
    assert table.batch("any.model") == pytest.approx(tuple(p / 2 for p in table.on_demand("any.model")))


def test_batch_records_are_billed_at_the_batch_price_and_kept_out_of_the_application_metrics(db, prices):
    with db.session() as s:
        s.add(usage("app", "m-a", 1000, 1000, T0 + timedelta(hours=1), meta={"userId": "u1"}))
    before = build_report(db, prices, account_id=A, since=T0, until=T0 + timedelta(days=1), mu_tokens_per_minute=10)
    with db.session() as s:
        s.add_all([usage("b1", "m-a", 2000, 1000, T0 + timedelta(hours=2), JOB),
                   usage("b2", "m-a", 2000, 1000, T0 + timedelta(hours=3), JOB),
                   usage("b3", "m-b", 1000, 1000, T0 + timedelta(hours=3), JOB)])
    after = build_report(db, prices, account_id=A, since=T0, until=T0 + timedelta(days=1), mu_tokens_per_minute=10)
    bill = after["bill"]
    a_cost = 4 * 0.0005 + 2 * 0.001  # 4k in, 2k out at half of m-a's on-demand price
    b_cost = 1 * 0.0001 + 1 * 0.0001  # m-b's own batch price
    assert bill["batch"] == [
        {"modelId": "m-a", "inputTokens": 4000, "outputTokens": 2000, "inputPricePer1kTokens": 0.0005,
         "outputPricePer1kTokens": 0.001, "cost": pytest.approx(a_cost)},
        {"modelId": "m-b", "inputTokens": 1000, "outputTokens": 1000, "inputPricePer1kTokens": 0.0001,
         "outputPricePer1kTokens": 0.0001, "cost": pytest.approx(b_cost)}]
    assert bill["batchJobs"] == [{"batchJobArn": JOB, "requests": 3, "inputTokens": 5000, "outputTokens": 3000,
                                  "cost": pytest.approx(a_cost + b_cost)}]
    assert bill["onDemand"] == before["bill"]["onDemand"]  # the on-demand lines are the application's alone
    assert bill["total"] == pytest.approx(before["bill"]["total"] + a_cost + b_cost)
    assert bill["batchCost"] == pytest.approx(a_cost + b_cost)
    for name in ("requests", "inputTokens", "outputTokens"):
        assert after["totals"][name] == before["totals"][name]
    for name, value in before["totals"]["efficiency"].items():  # latency and cost alike: the application's
        assert after["totals"]["efficiency"][name] == (pytest.approx(value) if isinstance(value, float) else value)
    assert sum(t["cost"] for t in after["trend"]) == pytest.approx(bill["total"])
    assert f"batch inference {a_cost + b_cost:.6f} USD" in render(after) and JOB in render(after)


def test_only_the_job_marks_its_calls_for_the_batch_price(db):
    role = Principal(A, f"arn:aws:iam::{A}:role/r", "", "role", "r")
    caller = Caller("b1", role, {"batchJobArn": "spoofed"}, batch_job_arn=JOB)
    record_usage(db, request_id=caller.request_id, principal=role, model_id="m-a", operation="InvokeModel",
                 request_metadata=caller.request_metadata, batch_job_arn=caller.batch_job_arn)
    # a client's requestMetadata cannot claim the batch price
    record_usage(db, request_id="c1", principal=role, model_id="m-a", operation="InvokeModel",
                 request_metadata={"batchJobArn": JOB})
    with db.session() as s:
        rows = {r.request_id: r.batch_job_arn for r in s.query(UsageRecord)}
    assert rows == {"b1": JOB, "c1": None}
