#!/usr/bin/env python
"""The insights report (SQL aggregation) against a straightforward pandas computation of the same numbers.

    .venv/bin/python bench/insights.py [--records 1000000] [--by domain] [--seed 0]

A temporary SQLite database gets `--records` usage records over the last 7 days (95% in the account
reported on, the rest in another; 6 models, one of them a provisioned throughput of 2 model units;
9 domains; 10% of the records without requestMetadata, 2% made by one of 3 evaluation jobs
(requestMetadata `evaluationJobArn` only: billed, not the application's traffic), 2% failed), 10% of
the application's records rated (thumbs and/or a 1-5 rating), conversions for 3% of the sessions, revenue
for 20% of the users plus users who never invoked. Then, in the same run, each side computes the report of
the 7 days by `--by`:

- ours: `outcrop.insights.report.build_report` (SQL through SQLAlchemy Core; its independent passes over
  the period run on connections of their own, as many at once as there are cores, up to five);
- pandas: `read_sql` of the period's records (requestMetadata's userId, sessionId and domain from their
  columns, as the report reads them) and events, then groupby/merge for every metric (nearest-rank
  percentiles with numpy's `inverted_cdf`), the evaluation jobs' records left out of all but the bill; one
  core, as pandas computes.

Both are timed end to end (database to numbers), best of `--repeat` runs each; every number of the totals
and of every group, and the bill's total and evaluation jobs' cost, are asserted equal (to 1e-9
relative). Last line: `ratio <pandas time / our time>`.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from outcrop.catalog.prices import PriceTable  # noqa: E402
from outcrop.insights.report import build_report  # noqa: E402
from outcrop.platform.database import Database  # noqa: E402

A, B = "111111111111", "222222222222"
PT = f"arn:aws:bedrock:us-east-1:{A}:provisioned-model/benchbenchbe"
MODELS = ["huggingface.smollm2-135m-instruct-v1:0", "meta.llama3-2-1b-instruct-v1:0", "local.tiny-llama-v1:0",
          "mistral.mistral-7b-instruct-v0:2", "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-text-v1", PT]
DOMAINS = ["code", "math", "travel", "books", "legal", "health", "retail", "support", "games"]
JOBS = [f"arn:aws:bedrock:us-east-1:{A}:evaluation-job/benchjob{i:04d}" for i in range(3)]
MU, MU_TPM = 2, 6000
PERCENTILES = (50, 95, 99)


def stamp(moments: np.ndarray) -> list[str]:
    """Timestamps as SQLAlchemy stores a DateTime on SQLite."""
    return pd.to_datetime(moments, unit="s").strftime("%Y-%m-%d %H:%M:%S.%f").tolist()


def build(path: Path, n: int, rng: np.random.Generator, now: datetime) -> None:
    db = Database(f"sqlite:///{path}")
    db.migrate()
    db.dispose()
    end = now.timestamp()
    start = (now - timedelta(days=7)).timestamp()
    account = np.where(rng.random(n) < 0.95, A, B)
    model = np.array(MODELS, dtype=object)[rng.integers(0, len(MODELS), n)]
    users = rng.integers(0, n // 20, n)
    sessions = users * 4 + rng.integers(0, 4, n)
    domain = np.array(DOMAINS, dtype=object)[rng.integers(0, len(DOMAINS), n)]
    draw = rng.random(n)
    has_meta, evaluation = draw >= 0.12, draw < 0.02
    job = np.array(JOBS, dtype=object)[rng.integers(0, len(JOBS), n)]
    job_col = [j if e else None for j, e in zip(job.tolist(), evaluation.tolist(), strict=True)]
    metas = [json.dumps({"userId": f"u{u}", "sessionId": f"s{s}", "domain": d}) if m else
             json.dumps({"evaluationJobArn": j}) if j else "null"
             for u, s, d, m, j in zip(users.tolist(), sessions.tolist(), domain.tolist(), has_meta.tolist(), job_col,
                                      strict=True)]
    # requestMetadata's userId, sessionId and domain in their own columns too, as record_usage stores them
    user_col = [f"u{u}" if m else None for u, m in zip(users.tolist(), has_meta.tolist(), strict=True)]
    session_col = [f"s{s}" if m else None for s, m in zip(sessions.tolist(), has_meta.tolist(), strict=True)]
    domain_col = [d if m else None for d, m in zip(domain.tolist(), has_meta.tolist(), strict=True)]
    tokens_in = rng.integers(5, 2000, n)
    tokens_out = rng.integers(0, 800, n)
    latency = rng.lognormal(6.5, 0.8, n).astype(np.int64)
    ttft = np.minimum(latency, rng.lognormal(4.5, 0.6, n).astype(np.int64))
    failed = rng.random(n) < 0.02
    created = rng.uniform(start, end, n)
    request_ids = [f"req-{i:08d}" for i in range(n)]
    rows = zip(request_ids, account.tolist(), [f"arn:aws:iam::{a}:root" for a in account.tolist()], model.tolist(),
               ["Converse"] * n, tokens_in.tolist(), tokens_out.tolist(), latency.tolist(),
               [None if (f or t % 13 == 0) else t for t, f in zip(ttft.tolist(), failed.tolist(), strict=True)],
               ["end_turn"] * n, np.where(failed, "ModelErrorException", "Success").tolist(), metas, user_col,
               session_col, domain_col, job_col, stamp(created), strict=True)
    con = sqlite3.connect(path)
    con.executemany("INSERT INTO usage_records (request_id, account_id, principal_arn, model_id, operation, "
                    "input_tokens, output_tokens, latency_ms, first_token_ms, stop_reason, status, request_metadata, "
                    "user_id, session_id, domain, evaluation_job_arn, created_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    # feedback on 10% of account A's application records, stored as record_feedback stores it (model/domain/user
    # copied)
    rated = np.flatnonzero((account == A) & ~evaluation & (rng.random(n) < 0.10))
    thumbs = rng.choice(np.array(["up", "down", None], dtype=object), len(rated), p=[0.6, 0.25, 0.15])
    rating = rng.integers(1, 6, len(rated)).astype(object)
    rating[(rng.random(len(rated)) < 0.3) & (thumbs != None)] = None  # noqa: E711 (elementwise)
    feedback_at = np.minimum(created[rated] + rng.uniform(0, 3600, len(rated)), end - 1)
    con.executemany(
        "INSERT INTO insights_feedback (account_id, request_id, principal_arn, model_id, domain, user_id, "
        "session_id, thumbs, rating, comment, invoked_at, created_at) VALUES (?,?,?,?,?,?,?,?,?,NULL,?,?)",
        ((A, request_ids[i], f"arn:aws:iam::{A}:root", model[i], domain[i] if has_meta[i] else None,
          f"u{users[i]}" if has_meta[i] else None, f"s{sessions[i]}" if has_meta[i] else None, t, r, c, f)
         for i, t, r, c, f in zip(rated.tolist(), thumbs.tolist(), rating.tolist(), stamp(created[rated]),
                                  stamp(feedback_at), strict=True)))
    n_sessions, n_users = int(sessions.max()) + 1, int(users.max()) + 1
    converted = rng.choice(n_sessions, n_sessions * 3 // 100, replace=False)
    con.executemany("INSERT INTO insights_conversions (account_id, principal_arn, name, user_id, session_id, "
                    "request_id, value, created_at) VALUES (?,?,?,NULL,?,NULL,?,?)",
                    ((A, f"arn:aws:iam::{A}:root", ["purchase", "signup"][s % 2], f"s{s}",
                      float(v) if s % 2 == 0 else None, t)
                     for s, v, t in zip(converted.tolist(), rng.uniform(1, 100, len(converted)).round(2).tolist(),
                                        stamp(rng.uniform(start, end, len(converted))), strict=True)))
    paying = np.concatenate([rng.choice(n_users, n_users // 5, replace=False),
                             np.arange(n_users, n_users + n_users // 50)])  # some never invoked
    con.executemany("INSERT INTO insights_revenue (account_id, principal_arn, user_id, amount, created_at) "
                    "VALUES (?,?,?,?,?)",
                    ((A, f"arn:aws:iam::{A}:root", f"u{u}", a, t)
                     for u, a, t in zip(paying.tolist(), rng.uniform(0.5, 50, len(paying)).round(2).tolist(),
                                        stamp(rng.uniform(start, end, len(paying))), strict=True)))
    created_pt = now - timedelta(days=3)
    con.execute("INSERT INTO provisioned_throughputs (arn, account_id, name, model_arn, desired_model_arn, "
                "foundation_model_id, model_units, commitment, commitment_expiration, status, failure_message, "
                "created_at, updated_at, deleted_at) VALUES (?,?,?,?,?,?,?,?,NULL,'InService',NULL,?,?,NULL)",
                (PT, A, "bench", MODELS[2], MODELS[2], MODELS[2], MU, "OneMonth",
                 stamp(np.array([created_pt.timestamp()]))[0], stamp(np.array([created_pt.timestamp()]))[0]))
    con.commit()
    con.execute("ANALYZE")
    con.close()


def nearest_rank(values: pd.Series) -> dict[str, float | None]:
    values = values.dropna()
    if values.empty:
        return {f"p{p}": None for p in PERCENTILES}
    return {f"p{p}": float(np.percentile(values.to_numpy(), p, method="inverted_cdf")) for p in PERCENTILES}


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def pandas_report(path: Path, prices: PriceTable, since: datetime, until: datetime, now: datetime,
                  by: str) -> dict:
    """The same numbers, the straightforward pandas way: read, parse, groupby."""
    con = sqlite3.connect(path)
    lo, hi = stamp(np.array([since.timestamp()]))[0], stamp(np.array([until.timestamp()]))[0]
    period = (A, lo, hi)
    # requestMetadata's userId, sessionId and domain are columns of their own: read them, no JSON to parse
    u = pd.read_sql_query("SELECT model_id, user_id, session_id, domain, input_tokens, output_tokens, latency_ms, "
                          "first_token_ms, status, evaluation_job_arn FROM usage_records WHERE account_id = ? "
                          "AND created_at >= ? AND created_at < ?", con, params=period)
    f = pd.read_sql_query("SELECT model_id, domain, thumbs, rating FROM insights_feedback WHERE account_id = ? "
                          "AND created_at >= ? AND created_at < ?", con, params=period)
    r = pd.read_sql_query("SELECT user_id, amount FROM insights_revenue WHERE account_id = ? AND created_at >= ? "
                          "AND created_at < ?", con, params=period)
    c = pd.read_sql_query("SELECT session_id, user_id FROM insights_conversions WHERE account_id = ? "
                          "AND created_at >= ? AND created_at < ?", con, params=period)
    con.close()

    key = "model_id" if by == "model" else "domain"
    u["ok"] = u["status"] == "Success"
    u["tokens"] = u["input_tokens"] + u["output_tokens"]
    per_model = u.groupby("model_id")[["input_tokens", "output_tokens"]].sum()
    price = {m: (0.0, 0.0) if ":provisioned-model/" in m else prices.on_demand(m.rsplit("/", 1)[-1])
             for m in per_model.index}
    u["cost"] = [ti / 1000 * price[m][0] + to / 1000 * price[m][1]
                 for m, ti, to in zip(u["model_id"], u["input_tokens"], u["output_tokens"], strict=True)]
    hours = (until - (now - timedelta(days=3))).total_seconds() / 3600
    pt_cost = MU * hours * prices.mu_hour(MODELS[2], "OneMonth")
    pt_tokens = u.loc[u["model_id"] == PT, "tokens"].sum()
    u.loc[u["model_id"] == PT, "cost"] += u.loc[u["model_id"] == PT, "tokens"] / pt_tokens * pt_cost
    bill = float(u["cost"].sum()) if pt_tokens else float(u["cost"].sum()) + pt_cost
    # evaluation jobs' records: in the bill (above), in no application metric (below)
    evaluation = u["evaluation_job_arn"].notna()
    evaluation_cost = float(u.loc[evaluation, "cost"].sum())
    u = u[~evaluation]
    converted_sessions = set(c["session_id"].dropna())
    converted_users = set(c["user_id"].dropna())

    def metrics(part: pd.DataFrame, fb: pd.DataFrame, cost: float) -> dict:
        ok = part[part["ok"]]
        users = part["user_id"].dropna().unique()
        sessions = part["session_id"].dropna().unique()
        revenue = float(r.loc[r["user_id"].isin(users), "amount"].sum())
        up, down = int((fb["thumbs"] == "up").sum()), int((fb["thumbs"] == "down").sum())
        rated = fb["rating"].dropna()
        n_conv = int(pd.Series(sessions).isin(converted_sessions).sum())
        n_conv_users = int(pd.Series(users).isin(converted_users).sum())
        tokens = int(part["tokens"].sum())
        return {"requests": len(part), "errors": int((~part["ok"]).sum()),
                "inputTokens": int(part["input_tokens"].sum()), "outputTokens": int(part["output_tokens"].sum()),
                "satisfaction": {"responses": len(fb), "thumbsUp": up, "thumbsDown": down,
                                 "thumbsUpRate": ratio(up, up + down), "ratings": len(rated),
                                 "meanRating": float(rated.mean()) if len(rated) else None,
                                 "csat": ratio(int((rated >= 4).sum()), len(rated))},
                "arpu": {"activeUsers": len(users), "revenue": revenue, "arpu": ratio(revenue, len(users))},
                "conversion": {"sessions": len(sessions), "convertedSessions": n_conv,
                               "conversionRate": ratio(n_conv, len(sessions)), "users": len(users),
                               "convertedUsers": n_conv_users, "userConversionRate": ratio(n_conv_users, len(users))},
                "efficiency": {"latencyMs": nearest_rank(ok["latency_ms"]),
                               "firstTokenMs": nearest_rank(ok["first_token_ms"]),
                               "outputTokensPerSecond": ratio(int(ok["output_tokens"].sum()),
                                                              int(ok["latency_ms"].sum()) / 1000),
                               "cost": cost, "costPerRequest": ratio(cost, len(part)),
                               "costPer1kTokens": ratio(cost * 1000, tokens)}}

    fkey = "model_id" if by == "model" else "domain"
    groups = {}
    for k, part in u.groupby(key, dropna=False):
        k = None if isinstance(k, float) and math.isnan(k) else k
        fb = f[f[fkey].isna()] if k is None else f[f[fkey] == k]
        groups[k] = metrics(part, fb, float(part["cost"].sum()))
    totals = metrics(u, f, bill - evaluation_cost)
    return {"totals": totals, "groups": groups, "bill": {"total": bill, "evaluationCost": evaluation_cost}}


def compare(ours, theirs, where: str = "") -> int:
    """Count the numbers compared; raise on the first that differs."""
    if isinstance(ours, dict):
        return sum(compare(ours[k], theirs[k], f"{where}.{k}") for k in theirs)
    if ours is None or theirs is None:
        assert ours is None and theirs is None, f"{where}: ours {ours}, pandas {theirs}"
        return 1
    assert math.isclose(float(ours), float(theirs), rel_tol=1e-9, abs_tol=1e-12), \
        f"{where}: ours {ours}, pandas {theirs}"
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--by", choices=("model", "domain"), default="domain")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    now = datetime.now(UTC).replace(microsecond=0)
    since, until = now - timedelta(days=7), now
    prices = PriceTable.load()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "outcrop.db"
        started = time.perf_counter()
        build(path, args.records, rng, now)
        print(f"built {args.records:,} usage records and their events in {time.perf_counter() - started:.1f} s "
              f"({path.stat().st_size / 1e6:.0f} MB)")
        db = Database(f"sqlite:///{path}")
        ours_times, theirs_times = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            ours = build_report(db, prices, account_id=A, since=since, until=until, by=args.by,
                                mu_tokens_per_minute=MU_TPM, now=now)
            ours_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            theirs = pandas_report(path, prices, since, until, now, args.by)
            theirs_times.append(time.perf_counter() - started)
        db.dispose()
    compared = compare(ours["totals"], theirs["totals"], "totals") + compare(ours["bill"], theirs["bill"], "bill")
    assert {g["key"] for g in ours["groups"]} == set(theirs["groups"]), "different groups"
    for g in ours["groups"]:
        compared += compare(g, theirs["groups"][g["key"]], f"groups[{g['key']}]")
    t = ours["totals"]
    print(f"report of {t['requests']:,} requests by {args.by}: {len(ours['groups'])} groups, {compared} numbers "
          f"agree (thumbs-up {t['satisfaction']['thumbsUpRate']:.4f}, ARPU {t['arpu']['arpu']:.4f}, "
          f"conversion {t['conversion']['conversionRate']:.4f}, p95 {t['efficiency']['latencyMs']['p95']} ms, "
          f"bill {ours['bill']['total']:.4f} {ours['currency']})")
    ours_s, theirs_s = min(ours_times), min(theirs_times)
    print(f"ours (SQL): {ours_s:.2f} s; pandas: {theirs_s:.2f} s (best of {args.repeat})")
    print(f"ratio {theirs_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
