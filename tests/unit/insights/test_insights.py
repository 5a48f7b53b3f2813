"""Insights: every metric of the report against values computed by hand from a small seeded history.

The seed (account A, period 2025-01-01 .. 2025-01-04, prices from a test price table):

    req  model        domain user session  in   out  latency ttft  status      time
    r1   m-a          code   u1   s1       100   50   1000   100   Success     day 1 01:00
    r2   m-a          code   u1   s1       200  100   2000   200   Success     day 1 02:00
    r3   m-a          math   u2   s2       300  150   3000   300   Success     day 2 01:00
    r4   m-b          math   u3   s3       400    0     50     -   ModelError  day 2 02:00
    r5   m-b          (no requestMetadata)  10   10    500    50   Success     day 3 00:00
    r8   provisioned  code   u2   s2       600  300   1500   150   Success     day 3 01:00
    r6 (before the period) and r7 (account B) must not count.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from outcrop.catalog.prices import PriceTable
from outcrop.errors import ResourceNotFoundException, ValidationException
from outcrop.iam.principal import Principal
from outcrop.insights import events
from outcrop.insights.report import build_report
from outcrop.platform.database import Database
from outcrop.provisioning.tables import ProvisionedThroughputRow
from outcrop.runtime.tables import UsageRecord

A, B = "111111111111", "222222222222"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
END = T0 + timedelta(days=3)
PT = f"arn:aws:bedrock:us-east-1:{A}:provisioned-model/abcdefabcdef"
MU_TPM = 100
PRICES = """
currency = "USD"
[defaults.on_demand]
input_per_1k_tokens = 0.001
output_per_1k_tokens = 0.002
[defaults.provisioned]
no_commitment_per_mu_hour = 2.0
one_month_per_mu_hour = 1.5
six_months_per_mu_hour = 1.1
[models."m-b".on_demand]
input_per_1k_tokens = 0.01
output_per_1k_tokens = 0.02
"""


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def usage(request_id, model, meta, tokens_in, tokens_out, latency, ttft, at, status="Success", account=A):
    return UsageRecord(request_id=request_id, account_id=account, principal_arn=f"arn:aws:iam::{account}:root",
                       model_id=model, operation="Converse", input_tokens=tokens_in, output_tokens=tokens_out,
                       latency_ms=latency, first_token_ms=ttft, stop_reason="end_turn", status=status,
                       request_metadata=meta, created_at=at)


def meta(user, session, domain):
    return {"userId": user, "sessionId": session, "domain": domain}


@pytest.fixture
def prices(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text(PRICES)
    return PriceTable.load(path)


@pytest.fixture
def seeded(db):
    root = Principal.account_root(A)
    with db.session() as s:
        s.add_all([
            usage("r1", "m-a", meta("u1", "s1", "code"), 100, 50, 1000, 100, T0 + hours(1)),
            usage("r2", "m-a", meta("u1", "s1", "code"), 200, 100, 2000, 200, T0 + hours(2)),
            usage("r3", "m-a", meta("u2", "s2", "math"), 300, 150, 3000, 300, T0 + hours(25)),
            usage("r4", "m-b", meta("u3", "s3", "math"), 400, 0, 50, None, T0 + hours(26), "ModelErrorException"),
            usage("r5", "m-b", None, 10, 10, 500, 50, T0 + hours(48)),
            usage("r8", PT, meta("u2", "s2", "code"), 600, 300, 1500, 150, T0 + hours(49)),
            usage("r6", "m-a", meta("u1", "s9", "code"), 999, 999, 9999, 999, T0 - hours(1)),
            usage("r7", "m-a", meta("u1", "s1", "code"), 999, 999, 9999, 999, T0 + hours(1), account=B),
            # 2 MUs, one-month term (1.5 an MU-hour), alive the last 24 hours of the period: 48 MU-hours, 72.0
            ProvisionedThroughputRow(arn=PT, account_id=A, name="pt", model_arn="m-a", desired_model_arn="m-a",
                                     foundation_model_id="m-a", model_units=2, commitment="OneMonth",
                                     status="InService", created_at=T0 + hours(48), updated_at=T0 + hours(48)),
            # deleted before the period began: costs nothing in it
            ProvisionedThroughputRow(arn=PT + "x", account_id=A, name="old", model_arn="m-a", desired_model_arn="m-a",
                                     foundation_model_id="m-a", model_units=5, commitment=None, status="InService",
                                     created_at=T0 - hours(120), updated_at=T0 - hours(120),
                                     deleted_at=T0 - hours(24)),
        ])
    events.record_feedback(db, root, "r1", thumbs="up", rating=5, at=T0 + hours(3))
    events.record_feedback(db, root, "r2", thumbs="down", rating=2, comment="wrong", at=T0 + hours(3))
    events.record_feedback(db, root, "r3", thumbs="up", at=T0 + hours(27))
    events.record_feedback(db, root, "r5", rating=4, at=T0 + hours(49))
    events.record_feedback(db, root, "r8", thumbs="up", rating=3, at=T0 + hours(50))
    events.record_feedback(db, root, "r8", thumbs="down", rating=1, at=T0 + hours(50))  # replaces the one above
    events.record_feedback(db, root, "r6", thumbs="down", at=T0 - hours(0.5))  # before the period
    events.record_revenue(db, root, "u1", 10.0, at=T0 + hours(5))
    events.record_revenue(db, root, "u2", 30.0, at=T0 + hours(48))
    events.record_revenue(db, root, "u9", 7.0, at=T0 + hours(1))  # a user with no invocation
    events.record_revenue(db, root, "u1", 5.0, at=T0 - hours(48))  # before the period
    events.record_conversion(db, root, "purchase", session_id="s1", value=20, at=T0 + hours(6))
    events.record_conversion(db, root, "purchase", request_id="r3", value=5, at=T0 + hours(28))  # u2 / s2
    events.record_conversion(db, root, "signup", user_id="u9", at=T0 + hours(1))
    events.record_conversion(db, root, "purchase", session_id="s3", at=T0 - hours(1))  # before the period
    events.record_revenue(db, Principal.account_root(B), "u1", 1000.0, at=T0 + hours(1))  # another account
    return db


def report(db, prices, by="model", since=T0, until=END):
    return build_report(db, prices, account_id=A, since=since, until=until, by=by, mu_tokens_per_minute=MU_TPM,
                        now=END)


def group(result, key):
    return next(g for g in result["groups"] if g["key"] == key)


def test_totals_every_metric(seeded, prices):
    t = report(seeded, prices)["totals"]
    assert (t["requests"], t["errors"], t["inputTokens"], t["outputTokens"]) == (6, 1, 1610, 610)
    assert t["satisfaction"] == {"responses": 5, "thumbsUp": 2, "thumbsDown": 2, "thumbsUpRate": 0.5,
                                 "ratings": 4, "meanRating": 3.0, "csat": 0.5}
    assert t["arpu"] == {"activeUsers": 3, "revenue": 40.0, "arpu": pytest.approx(40 / 3),
                         "unattributedRevenue": 7.0}
    assert t["conversion"] == {"sessions": 3, "convertedSessions": 2, "conversionRate": pytest.approx(2 / 3),
                               "users": 3, "convertedUsers": 1, "userConversionRate": pytest.approx(1 / 3)}
    e = t["efficiency"]
    # successful latencies 500 1000 1500 2000 3000: nearest ranks 3, 5, 5
    assert e["latencyMs"] == {"p50": 1500, "p95": 3000, "p99": 3000}
    assert e["firstTokenMs"] == {"p50": 150, "p95": 300, "p99": 300}
    assert e["outputTokensPerSecond"] == pytest.approx(610 / 8.0)
    bill = 0.0012 + 0.0043 + 72.0
    assert e["cost"] == pytest.approx(bill)
    assert e["costPerRequest"] == pytest.approx(bill / 6)
    assert e["costPer1kTokens"] == pytest.approx(bill * 1000 / 2220)


def test_the_bill(seeded, prices):
    bill = report(seeded, prices)["bill"]
    assert [(b["modelId"], b["inputTokens"], b["outputTokens"]) for b in bill["onDemand"]] == [
        ("m-a", 600, 300), ("m-b", 410, 10)]
    assert bill["onDemand"][0]["cost"] == pytest.approx(0.6 * 0.001 + 0.3 * 0.002)
    assert bill["onDemand"][1]["cost"] == pytest.approx(0.41 * 0.01 + 0.01 * 0.02)
    [pt] = bill["provisioned"]
    assert pt["provisionedModelArn"] == PT and pt["modelUnitHours"] == pytest.approx(48)
    assert pt["pricePerModelUnitHour"] == 1.5 and pt["cost"] == pytest.approx(72.0)
    assert pt["tokens"] == 900 and pt["utilisation"] == pytest.approx(900 / (2 * MU_TPM * 24 * 60))
    assert bill["total"] == pytest.approx(72.0055)


def test_by_model(seeded, prices):
    result = report(seeded, prices, by="model")
    assert [g["key"] for g in result["groups"]] == [PT, "m-a", "m-b"]
    a = group(result, "m-a")
    assert (a["requests"], a["errors"]) == (3, 0)
    assert a["satisfaction"]["thumbsUpRate"] == pytest.approx(2 / 3)
    assert (a["satisfaction"]["meanRating"], a["satisfaction"]["csat"]) == (3.5, 0.5)
    assert (a["arpu"]["activeUsers"], a["arpu"]["revenue"], a["arpu"]["arpu"]) == (2, 40.0, 20.0)
    assert a["conversion"]["conversionRate"] == 1.0
    assert a["efficiency"]["latencyMs"] == {"p50": 2000, "p95": 3000, "p99": 3000}
    assert a["efficiency"]["costPerRequest"] == pytest.approx(0.0012 / 3)
    b = group(result, "m-b")
    assert (b["requests"], b["errors"]) == (2, 1)
    # u3 is active but paid nothing: an ARPU of 0, not "no data"; s3 did not convert in the period
    assert (b["arpu"]["activeUsers"], b["arpu"]["arpu"]) == (1, 0.0)
    assert (b["conversion"]["sessions"], b["conversion"]["conversionRate"]) == (1, 0.0)
    assert b["satisfaction"] == {"responses": 1, "thumbsUp": 0, "thumbsDown": 0, "thumbsUpRate": None,
                                 "ratings": 1, "meanRating": 4.0, "csat": 1.0}
    assert b["efficiency"]["latencyMs"] == {"p50": 500, "p95": 500, "p99": 500}  # the failure does not count
    assert b["efficiency"]["outputTokensPerSecond"] == pytest.approx(20.0)
    p = group(result, PT)
    assert p["efficiency"]["cost"] == pytest.approx(72.0) and p["arpu"]["arpu"] == 30.0
    assert (p["satisfaction"]["thumbsUpRate"], p["satisfaction"]["meanRating"]) == (0.0, 1.0)


def test_by_domain_with_no_users_and_no_sessions(seeded, prices):
    result = report(seeded, prices, by="domain")
    assert [g["key"] for g in result["groups"]] == ["code", "math", None]
    code, math, none = (group(result, k) for k in ("code", "math", None))
    assert code["requests"] == 3 and code["efficiency"]["cost"] == pytest.approx(0.0006 + 72.0)
    assert code["satisfaction"]["thumbsUpRate"] == pytest.approx(1 / 3)
    assert code["satisfaction"]["meanRating"] == pytest.approx(8 / 3)
    assert code["arpu"]["arpu"] == 20.0 and code["conversion"]["conversionRate"] == 1.0
    assert math["efficiency"]["cost"] == pytest.approx(0.0006 + 0.004)
    assert (math["arpu"]["revenue"], math["arpu"]["arpu"], math["conversion"]["conversionRate"]) == (30.0, 15.0, 0.5)
    # r5 carried no requestMetadata: no users and no sessions mean undefined rates, not zeros
    assert none["requests"] == 1 and none["efficiency"]["cost"] == pytest.approx(0.0003)
    assert none["arpu"] == {"activeUsers": 0, "revenue": 0.0, "arpu": None}
    assert (none["conversion"]["sessions"], none["conversion"]["conversionRate"]) == (0, None)
    assert sum(g["efficiency"]["cost"] for g in result["groups"]) == pytest.approx(result["bill"]["total"])


def test_conversions_and_trend(seeded, prices):
    result = report(seeded, prices)
    assert result["conversions"] == [{"name": "purchase", "count": 2, "value": 25.0},
                                     {"name": "signup", "count": 1, "value": None}]
    assert result["granularity"] == "day"
    trend = {t["bucket"]: t for t in result["trend"]}
    assert list(trend) == ["2025-01-01", "2025-01-02", "2025-01-03"]
    assert [t["requests"] for t in trend.values()] == [2, 2, 2]
    assert trend["2025-01-01"]["cost"] == pytest.approx(0.0006)
    assert trend["2025-01-03"]["cost"] == pytest.approx(72.0003)
    assert trend["2025-01-01"]["satisfaction"]["thumbsUpRate"] == 0.5
    assert trend["2025-01-02"]["satisfaction"]["thumbsUpRate"] == 1.0


def test_a_period_with_no_revenue(seeded, prices):
    t = report(seeded, prices, since=T0 + hours(24), until=T0 + hours(36))["totals"]
    assert t["requests"] == 2 and t["arpu"] == {"activeUsers": 2, "revenue": 0.0, "arpu": 0.0,
                                                "unattributedRevenue": 0.0}
    assert t["conversion"]["conversionRate"] == 0.5  # s2 converted (r3's purchase), s3 did not


def test_an_empty_period(seeded, prices):
    result = report(seeded, prices, since=T0 - hours(110), until=T0 - hours(50))
    t = result["totals"]
    assert (t["requests"], t["satisfaction"]["thumbsUpRate"], t["arpu"]["arpu"]) == (0, None, None)
    assert t["conversion"]["conversionRate"] is None and t["efficiency"]["latencyMs"]["p50"] is None
    assert t["efficiency"]["costPerRequest"] is None and result["groups"] == []
    # no traffic, but the old throughput was alive all 60 hours (5 MUs, no commitment: 2.0 an MU-hour)
    assert result["bill"]["total"] == pytest.approx(5 * 60 * 2.0)
    assert result["bill"]["provisioned"][0]["utilisation"] == 0.0


def test_cross_domain_with_and_without_evaluation_jobs(seeded, prices):
    assert all(d["evaluation"] == {} for d in report(seeded, prices)["crossDomain"])
    from sqlalchemy import text

    def job(name, ended, scores):
        results = {"tasks": [{"taskType": "General", "metrics": [
            {"metricName": "Builtin.Accuracy", "byCategory": scores}]}]}
        import json
        with seeded.engine.begin() as c:
            c.execute(text("INSERT INTO evaluation_jobs (job_arn, account_id, job_name, job_type, status, request, "
                           "results, created_at, updated_at, ended_at) VALUES (:arn, :a, :n, 'Automated', "
                           "'Completed', '{}', :r, :t, :t, :t)"),
                      {"arn": f"arn:{name}", "a": A, "n": name, "r": json.dumps(results), "t": ended})
    job("old", T0 - hours(10), {"Code": {"m-a": 0.1}})
    job("new", T0 + hours(1), {"Code": {"m-a": 0.8, "m-b": 0.6}, "history": {"m-a": 0.5}})
    cross = report(seeded, prices)["crossDomain"]
    assert [d["domain"] for d in cross] == ["code", "math", None, "history"]
    assert cross[0]["evaluation"] == {"Builtin.Accuracy": {"m-a": 0.8, "m-b": 0.6}}  # newest job, any case
    assert cross[0]["thumbsUpRate"] == pytest.approx(1 / 3) and cross[1]["evaluation"] == {}
    assert cross[3]["responses"] == 0 and cross[3]["evaluation"] == {"Builtin.Accuracy": {"m-a": 0.5}}


def test_feedback_on_an_unknown_request_is_refused(seeded):
    with pytest.raises(ResourceNotFoundException, match="no-such-request"):
        events.record_feedback(seeded, Principal.account_root(A), "no-such-request", thumbs="up")
    with pytest.raises(ResourceNotFoundException, match="r1"):  # another account's request does not exist
        events.record_feedback(seeded, Principal.account_root(B), "r1", thumbs="up")


@pytest.mark.parametrize("kwargs, message", [
    ({}, "thumbs"), ({"thumbs": "sideways"}, "thumbs"), ({"rating": 6}, "rating"), ({"rating": 0}, "rating"),
    ({"rating": True}, "rating"), ({"rating": 4.5}, "rating"), ({"thumbs": "up", "comment": ""}, "comment"),
])
def test_bad_feedback(seeded, kwargs, message):
    with pytest.raises(ValidationException, match=message):
        events.record_feedback(seeded, Principal.account_root(A), "r1", **kwargs)


def test_bad_conversions_and_revenue(seeded):
    root = Principal.account_root(A)
    with pytest.raises(ValidationException, match="userId or sessionId"):
        events.record_conversion(seeded, root, "purchase")
    with pytest.raises(ValidationException, match="name"):
        events.record_conversion(seeded, root, "", user_id="u1")
    with pytest.raises(ValidationException, match="value"):
        events.record_conversion(seeded, root, "purchase", user_id="u1", value="12")
    with pytest.raises(ResourceNotFoundException):
        events.record_conversion(seeded, root, "purchase", request_id="nope")
    for amount in ("10", float("nan"), float("inf"), None, True):
        with pytest.raises(ValidationException, match="amount"):
            events.record_revenue(seeded, root, "u1", amount)
    with pytest.raises(ValidationException, match="userId"):
        events.record_revenue(seeded, root, None, 1.0)


def test_bad_report_arguments(seeded, prices):
    with pytest.raises(ValidationException, match="groupBy"):
        report(seeded, prices, by="user")
    with pytest.raises(ValidationException, match="empty"):
        report(seeded, prices, since=END, until=T0)


def test_terminal_html_and_cli(seeded, prices, tmp_path, capsys, monkeypatch):
    import json

    from outcrop.cli import main
    from outcrop.insights.html import render_html
    from outcrop.insights.text import render

    result = report(seeded, prices, by="domain")
    text = render(result)
    for needle in ("thumbs-up 50.0%", "CSAT 50.0%", "ARPU           13.3333 USD", "conversion     66.7% of 3",
                   "latency p50/p95/p99 1,500/3,000/3,000 ms", "TOTAL 72.005500 USD", "(no domain)"):
        assert needle in text, needle
    page = render_html([result])
    assert page.count("<svg") == 4 and "Live satisfaction by domain" in page
    # the CLI reads the same database (the data dir's outcrop.db) and prints the same numbers
    monkeypatch.setenv("OUTCROP_PRICE_TABLE", str(tmp_path / "prices.toml"))
    monkeypatch.setenv("OUTCROP_MU_TOKENS_PER_MINUTE", str(MU_TPM))
    html_file = tmp_path / "report.html"
    assert main(["insights", "report", "--data-dir", str(tmp_path), "--since", T0.isoformat(), "--until",
                 END.isoformat(), "--by", "domain", "--json", "--html", str(html_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2  # accounts A and B both had activity
    from_cli = {r["accountId"]: r for r in map(json.loads, lines)}
    assert from_cli[A]["totals"] == json.loads(json.dumps(result["totals"]))
    assert from_cli[B]["totals"]["requests"] == 1 and html_file.read_text().count("<svg") >= 4


@pytest.mark.parametrize("by", ["model", "domain"])
def test_the_same_report_whether_sqlite_scans_or_reads_the_index(seeded, prices, monkeypatch, by):
    """A period holding most of the records is scanned, a small one read through the index: same numbers."""
    from outcrop.insights import report as module

    results = []
    for share in (10**9, 0):  # the period always a large share, then never
        monkeypatch.setattr(module._Query, "SCAN_SHARE", share)
        results.append(report(seeded, prices, by=by))
    assert results[0] == results[1]
    assert results[0]["totals"]["efficiency"]["latencyMs"] == {"p50": 1500, "p95": 3000, "p99": 3000}


def test_request_metadata_columns():
    """userId, sessionId and domain are kept as columns beside the JSON, whoever makes the record."""
    record = usage("r", "m-a", {**meta("u1", "s1", "code"), "other": "x"}, 1, 1, 1, 1, T0)
    assert (record.user_id, record.session_id, record.domain) == ("u1", "s1", "code")
    assert record.request_metadata == {**meta("u1", "s1", "code"), "other": "x"}
    record = usage("r", "m-a", {"userId": "u" * 300, "domain": 7}, 1, 1, 1, 1, T0)
    assert (record.user_id, record.session_id, record.domain) == ("u" * 256, None, None)
    record.request_metadata = {"evaluationJobArn": JOB}  # an ARN is kept whole, up to 1011 characters
    assert (record.user_id, record.evaluation_job_arn) == (None, JOB)
    record.request_metadata = {"evaluationJobArn": "a" * 1100}
    assert record.evaluation_job_arn == "a" * 1011
    record.request_metadata = None
    assert (record.user_id, record.session_id, record.domain, record.evaluation_job_arn) == (None, None, None, None)


def test_record_usage_fills_the_metadata_columns(db):
    from outcrop.runtime.usage import record_usage

    record_usage(db, request_id="q1", principal=Principal.account_root(A), model_id="m-a", operation="Converse",
                 request_metadata=meta("u7", "s7", "books"))
    record_usage(db, request_id="q2", principal=Principal.account_root(A), model_id="m-a", operation="Converse")
    with db.session() as s:
        rows = s.execute(select(UsageRecord.request_id, UsageRecord.user_id, UsageRecord.session_id,
                                UsageRecord.domain).order_by(UsageRecord.request_id)).all()
    assert [tuple(r) for r in rows] == [("q1", "u7", "s7", "books"), ("q2", None, None, None)]


def test_migration_0008_fills_the_columns_of_existing_records(tmp_path):
    """Records written before 0008 get their userId, sessionId and domain from their requestMetadata."""
    import json

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from outcrop.platform.database import MIGRATIONS_DIR

    database = Database(f"sqlite:///{tmp_path / 'old.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0007")
        for request_id, metadata in (("old1", '{"userId": "u1", "sessionId": "s1", "domain": "code"}'),
                                     ("old2", '{"userId": "u2"}'), ("old3", "null"), ("old4", None),
                                     ("old5", json.dumps({"evaluationJobArn": JOB}))):
            connection.execute(text(
                "INSERT INTO usage_records (request_id, account_id, principal_arn, model_id, operation, input_tokens,"
                " output_tokens, latency_ms, status, request_metadata, created_at) VALUES (:r, :a, 'p', 'm-a', "
                "'Converse', 1, 1, 1, 'Success', :m, '2025-01-01 00:00:00.000000')"), {"r": request_id, "a": A,
                                                                                        "m": metadata})
    database.migrate()
    with database.engine.connect() as connection:
        rows = connection.execute(text("SELECT request_id, user_id, session_id, domain, evaluation_job_arn "
                                       "FROM usage_records ORDER BY request_id")).all()
    database.dispose()
    assert [tuple(r) for r in rows] == [("old1", "u1", "s1", "code", None), ("old2", "u2", None, None, None),
                                        ("old3", None, None, None, None), ("old4", None, None, None, None),
                                        ("old5", None, None, None, JOB)]


# -- review fixes -------------------------------------------------------------------------------------

JOB = f"arn:aws:bedrock:us-east-1:{A}:evaluation-job/" + "j" * 300  # longer than any other metadata value


def test_concurrent_feedback_on_one_request_makes_one_row(seeded, monkeypatch):
    """Another call inserts the same request's feedback between this one's look and its insert (a double
    click): the unique (account, request id) refuses the second row, and this call updates the first."""
    import threading

    from outcrop.insights.tables import FeedbackRow

    root, look = Principal.account_root(A), events._invocation
    with seeded.engine.begin() as c:
        c.execute(FeedbackRow.__table__.delete().where(FeedbackRow.request_id == "r3"))

    def racing(session, account_id, request_id):
        record = look(session, account_id, request_id)
        if not racing.done:
            racing.done = True
            thread = threading.Thread(target=events.record_feedback, args=(seeded, root, "r3"),
                                      kwargs={"thumbs": "down", "comment": "first"})
            thread.start()
            thread.join()
        return record
    racing.done = False
    monkeypatch.setattr(events, "_invocation", racing)
    assert events.record_feedback(seeded, root, "r3", rating=5)["rating"] == 5
    with seeded.session() as s:
        rows = s.scalars(select(FeedbackRow).where(FeedbackRow.request_id == "r3")).all()
    assert [(r.thumbs, r.rating, r.comment) for r in rows] == [("down", 5, "first")]


def test_simultaneous_feedback_from_threads(seeded):
    import threading

    root, failures = Principal.account_root(A), []
    with seeded.session() as s:
        s.add_all([usage(f"t{i}", "m-a", None, 1, 1, 1, 1, T0 + hours(2)) for i in range(20)])

    def click(request_id, thumbs, start):
        start.wait()
        try:
            events.record_feedback(seeded, root, request_id, thumbs=thumbs)
        except Exception as exc:  # noqa: BLE001 (any failure fails the test below)
            failures.append(repr(exc))
    for i in range(20):
        start = threading.Barrier(2)
        threads = [threading.Thread(target=click, args=(f"t{i}", thumbs, start)) for thumbs in ("up", "down")]
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert failures == []


def test_feedback_again_updates_only_the_fields_given(seeded):
    from outcrop.insights.tables import FeedbackRow

    root = Principal.account_root(A)
    events.record_feedback(seeded, root, "r3", rating=4)  # r3 had thumbs up: it keeps it
    events.record_feedback(seeded, root, "r3", rating=2, comment="on second thought")
    result = events.record_feedback(seeded, root, "r3", thumbs="down")
    assert (result["thumbs"], result["rating"]) == ("down", 2)
    with seeded.session() as s:
        row = s.scalars(select(FeedbackRow).where(FeedbackRow.request_id == "r3")).one()
    assert (row.thumbs, row.rating, row.comment) == ("down", 2, "on second thought")


@pytest.mark.parametrize("share", [10**9, 0])
def test_evaluation_jobs_are_billed_but_are_not_application_traffic(seeded, prices, monkeypatch, share):
    """An evaluation job's calls (requestMetadata evaluationJobArn) change no application metric, whether
    SQLite scans or reads the indexes; the bill has their tokens and shows their cost as its own lines."""
    from outcrop.insights import report as module
    from outcrop.insights.text import render

    monkeypatch.setattr(module._Query, "SCAN_SHARE", share)
    before = report(seeded, prices, by="domain")
    with seeded.session() as s:  # slow, on m-a and on the throughput; one even names a user and a session
        s.add_all([usage("e1", "m-a", {"evaluationJobArn": JOB, "userId": "u9", "sessionId": "s-eval"}, 1000, 500,
                         90000, 80000, T0 + hours(2)),
                   usage("e2", PT, {"evaluationJobArn": JOB}, 100, 200, 90000, None, T0 + hours(49))])
    after = report(seeded, prices, by="domain")
    evaluation_cost = 1.0 * 0.001 + 0.5 * 0.002 + 72.0 * 300 / 1200  # m-a tokens; 300 of the PT's 1200 tokens
    assert after["bill"]["evaluationJobs"] == [{"evaluationJobArn": JOB, "requests": 2, "inputTokens": 1100,
                                                "outputTokens": 700, "cost": pytest.approx(evaluation_cost)}]
    assert after["bill"]["evaluationCost"] == pytest.approx(evaluation_cost)
    assert after["bill"]["total"] == pytest.approx(before["bill"]["total"] + 0.002)
    assert after["bill"]["onDemand"][0]["inputTokens"] == 1600
    t, t0 = after["totals"], before["totals"]
    for name in ("requests", "inputTokens", "outputTokens", "satisfaction", "arpu", "conversion"):
        assert t[name] == t0[name], name
    for name in ("latencyMs", "firstTokenMs", "outputTokensPerSecond"):
        assert t["efficiency"][name] == t0["efficiency"][name], name
    assert t["efficiency"]["cost"] == pytest.approx(after["bill"]["total"] - evaluation_cost)
    assert t["efficiency"]["costPerRequest"] == pytest.approx((72.0055 - 18.0) / 6)
    assert [g["key"] for g in after["groups"]] == ["code", "math", None]
    none = group(after, None)
    assert none["requests"] == 1 and none["efficiency"]["latencyMs"]["p99"] == 500
    assert sum(g["efficiency"]["cost"] for g in after["groups"]) == pytest.approx(t["efficiency"]["cost"])
    assert [x["requests"] for x in after["trend"]] == [x["requests"] for x in before["trend"]]
    assert sum(x["cost"] for x in after["trend"]) == pytest.approx(after["bill"]["total"])
    text = render(after)
    assert "of which evaluation jobs 18.002000 USD" in text and JOB in text


def test_a_failed_throughput_is_not_billed(seeded, prices):
    with seeded.session() as s:
        s.add(ProvisionedThroughputRow(arn=PT + "f", account_id=A, name="failed", model_arn="m-a",
                                       desired_model_arn="m-a", foundation_model_id="m-a", model_units=3,
                                       commitment=None, status="Failed", created_at=T0 - hours(1),
                                       updated_at=T0 - hours(1)))
    bill = report(seeded, prices)["bill"]
    assert [p["provisionedModelName"] for p in bill["provisioned"]] == ["pt"]
    assert bill["total"] == pytest.approx(72.0055)


def test_amounts_are_bounded_and_the_json_is_strict(seeded):
    from outcrop.insights.service import dumps

    root = Principal.account_root(A)
    for amount in (1e308, -1e13):
        with pytest.raises(ValidationException, match="amount"):
            events.record_revenue(seeded, root, "u1", amount)
    with pytest.raises(ValidationException, match="value"):
        events.record_conversion(seeded, root, "purchase", user_id="u1", value=1e12 + 1)
    events.record_revenue(seeded, root, "u1", 1e12)
    events.record_revenue(seeded, root, "u1", -1e12)
    assert dumps({"a": float("inf"), "b": [float("nan"), 1.5], "c": None}) == '{"a": null, "b": [null, 1.5], "c": null}'


def test_control_characters_are_refused(seeded):
    root = Principal.account_root(A)
    with pytest.raises(ValidationException, match="name contains the control character '\\\\x1b'"):
        events.record_conversion(seeded, root, "buy\x1b[2J", user_id="u1")
    with pytest.raises(ValidationException, match="userId"):
        events.record_conversion(seeded, root, "buy", user_id="u\r1")
    with pytest.raises(ValidationException, match="userId"):
        events.record_revenue(seeded, root, "u\x001", 1.0)
    with pytest.raises(ValidationException, match="comment"):
        events.record_feedback(seeded, root, "r1", thumbs="up", comment="ding\x07")
    with pytest.raises(ValidationException, match="comment"):
        events.record_feedback(seeded, root, "r1", thumbs="up", comment="\x9b31m")  # C1 CSI
    events.record_feedback(seeded, root, "r1", thumbs="up", comment="line one\r\nline two\tend")


def test_html_with_dollar_signs(seeded, prices):
    from outcrop.insights.html import render_html

    with seeded.session() as s:
        s.add_all([usage("d1", "m-a", meta("u1", "s1", "$a\\b$"), 1, 1, 10, 1, T0 + hours(1)),
                   usage("d2", "m-a", meta("u1", "s1", "$$"), 1, 1, 10, 1, T0 + hours(1))])
    events.record_feedback(seeded, Principal.account_root(A), "d1", thumbs="up", at=T0 + hours(2))
    page = render_html([report(seeded, prices, by="domain")])
    assert page.count("<svg") == 4


def test_a_period_reaching_before_the_year_1(tmp_path, capsys):
    from outcrop.cli import main
    from outcrop.insights.service import parse_time

    for text in ("1000000d", "99999999999d"):
        with pytest.raises(ValidationException, match=text):
            parse_time(text)
    assert main(["insights", "report", "--data-dir", str(tmp_path), "--since", "1000000d"]) == 1
    assert "1000000d" in capsys.readouterr().err


def test_the_client_of_a_bearer_token_boto3_client(monkeypatch, tmp_path):
    import boto3

    from outcrop.insights.client import InsightsClient

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "ABSK-not-a-real-key")
    runtime = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url="https://127.0.0.1:9")
    with pytest.raises(ValueError, match="SigV4 credentials.*bedrock and bedrock-runtime only"):
        InsightsClient.from_boto3(runtime)
