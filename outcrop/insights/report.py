"""The report: the five business metrics and the bill, for one account and period, by model or by domain.

Every number is aggregated in SQL (SQLAlchemy Core, the same statements on SQLite and PostgreSQL); Python
only combines the group rows and applies the price table per model. Definitions, where the
issue left room:

- The period is [since, until). Invocations count by their time, events (feedback, conversions,
  revenue) by the time they were recorded.
- The calls an evaluation job makes (requestMetadata `evaluationJobArn`, a column of usage_records) are
  not the application's traffic: they are left out of every application metric (requests, satisfaction,
  ARPU, conversion, efficiency, the groups, the trend's requests and tokens), and billed: their tokens are
  in the bill's lines like any other, and `bill.evaluationJobs` shows each job's share (its tokens' cost
  and its share of a throughput's hours), which the totals' and the groups' cost leave out
  (totals' cost = bill total - evaluation cost). The trend's cost is the bill's, evaluation included.
- Satisfaction: thumbs-up rate = up / (up + down); mean rating over rated responses; CSAT = share of
  ratings that are 4 or 5; `responses` counts feedback rows (one per rated request).
- ARPU = revenue recorded in the period from users who invoked in the period / those active users. A
  group's ARPU counts the revenue of the users active in that group, so a user of two models counts in
  both; `unattributedRevenue` (totals) is revenue from users with no invocation in the period.
- Conversion rate = sessions with at least one invocation in the period that also have a conversion in
  the period / sessions with at least one invocation. The same for users (`userConversionRate`).
- Efficiency over successful invocations: latency and time to first token percentiles by nearest rank
  (the value at rank ceil(p/100 * n): the smallest value with at least that many values at or below it,
  found with a running sum over the counts of each distinct value, in integer arithmetic, which both
  databases share); output tokens per second = output tokens / seconds of request time. Cost counts
  every record (failed or abandoned generations spent their tokens).
- The bill: on-demand tokens x the model's prices (a custom model is priced as its base), nothing per
  token on a provisioned throughput, whose model-unit hours inside the period are priced by commitment
  term. A group's cost carries its share of a throughput's hours in proportion to its tokens on it;
  hours no traffic used are in the bill and the totals only. A throughput whose status is Failed never
  served and is not billed (Bedrock does not charge for it), however long it stays undeleted.
- Utilisation of a provisioned throughput = tokens it processed / tokens its model units could process
  during its hours in the period (`mu_tokens_per_minute` per unit).
- A batch inference job's calls (usage_records.batch_job_arn, set by the job itself, never from a request)
  are billed at the batch price (`PriceTable.batch`, half of on-demand by default) in lines of their own
  (`bill.batch` by model, `bill.batchJobs` by job). They are offline work, not the application's live traffic
  (no users or sessions; their latency is the job's queue): like evaluation's, they are left out of the
  application metrics and of the totals' and groups' cost (totals' cost = bill total - evaluation cost - batch
  cost); the trend's cost is the bill's.
- requestMetadata's userId, sessionId, domain and evaluationJobArn are read from their own columns of usage_records
  (copied out of the JSON when a record is made), never parsed per row.
- Cross-domain: feedback by `requestMetadata.domain` beside the newest completed evaluation jobs'
  scores by dataset `category` (`results.tasks[].metrics[].byCategory`), matched case-insensitively.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    String,
    case,
    column,
    distinct,
    func,
    literal_column,
    null,
    select,
    table,
    union_all,
)
from sqlalchemy.sql.elements import UnaryExpression
from sqlalchemy.sql.operators import custom_op

from outcrop.catalog.prices import PriceTable
from outcrop.customization.tables import CustomModelRow
from outcrop.errors import ValidationException
from outcrop.guardrails.tables import GuardrailCheckRow
from outcrop.insights.tables import ConversionRow, FeedbackRow, RevenueRow
from outcrop.platform.database import Database, UtcDateTime, as_utc, utc_now
from outcrop.provisioning.tables import ProvisionedThroughputRow, ThroughputStatus
from outcrop.runtime.tables import UsageRecord, UsageStatus

GROUPINGS = ("model", "domain")
PERCENTILES = (50, 95, 99)
#: Connections a report reads on at once (its five heavy passes over the period are independent).
REPORT_THREADS = min(5, os.cpu_count() or 1)
#: A period up to this long is bucketed by hour in the trend; longer ones by day.
HOURLY_UP_TO = timedelta(days=2)

# Evaluation sits above insights: its jobs are read through the table's schema (a lightweight table
# clause), not by importing its code (so "Completed" below is evaluation.tables.JobStatus.COMPLETED, spelled out).
_evaluation_jobs = table("evaluation_jobs", column("account_id", String), column("status", String),
                         column("job_name", String), column("results", JSON),
                         column("created_at", UtcDateTime()), column("ended_at", UtcDateTime()))


@dataclass(frozen=True)
class Period:
    since: datetime
    until: datetime

    @property
    def hours(self) -> float:
        return (self.until - self.since).total_seconds() / 3600


def _ratio(numerator: float, denominator: float) -> float | None:
    """None when there is nothing to divide by: 'no sessions' is not a 0% conversion rate."""
    return numerator / denominator if denominator else None


def _base_model(model_id: str, custom_bases: dict[str, str]) -> str:
    """The price table's key for what a usage record names (a model id or an ARN)."""
    if ":foundation-model/" in model_id:
        return model_id.rsplit("/", 1)[1]
    return custom_bases.get(model_id, model_id)


def _is_provisioned(model_id: str) -> bool:
    return ":provisioned-model/" in model_id


def _plus(column):
    """`+column` on SQLite: the same value, but a term SQLite will not serve from an index on the column."""
    return UnaryExpression(column, operator=custom_op("+"), type_=column.type)


class _Query:
    """The SQL of one report, straight on usage_records: the period's records and the group key on them.

    requestMetadata's userId, sessionId and domain are columns of the records (filled when a record is
    made), so no query parses JSON. SQLite plans a period's records through the (account_id, created_at)
    index even when the period holds most of the table (without histograms it guesses a range keeps a
    small share), and a million rowid lookups cost ten times a scan: when the period holds more than
    1/`SCAN_SHARE` of the records, the per-record queries are told to scan, and the distinct counts over
    the whole period to read the (account_id, user_id|session_id, created_at) indexes, which cover them.
    PostgreSQL plans by its own statistics."""

    #: the period's share of the table above which SQLite scans rather than looks records up by time
    SCAN_SHARE = 8

    def __init__(self, session, account_id: str, period: Period, by: str, dialect: str,
                 large_share: bool | None = None) -> None:
        self.session, self.account_id, self.period, self.by = session, account_id, period, by
        r = UsageRecord
        self.g = r.model_id if by == "model" else r.domain
        account, created = r.account_id, r.created_at
        self.where_all = self.where_indexed = (account == account_id, created >= period.since,
                                               created < period.until)
        self.large_share = dialect == "sqlite" and (self._large_share() if large_share is None else large_share)
        if self.large_share:
            self.where_all = (_plus(account) == account_id, _plus(created) >= period.since,
                              _plus(created) < period.until)
            self.where_indexed = (account == account_id, _plus(created) >= period.since,
                                  _plus(created) < period.until)
        # the application's records: not an evaluation job's calls (the user and session indexes end with
        # evaluation_job_arn, so the counts they cover stay in the index)
        application = r.evaluation_job_arn.is_(None)
        # nor a batch job's: its calls carry no user or session, so the counts over the indexes need not test it
        # (and stay within the index)
        self.where = (*self.where_all, application, r.batch_job_arn.is_(None))
        self.where_indexed = (*self.where_indexed, application)

    def _large_share(self) -> bool:
        r = UsageRecord
        in_period = self.session.scalar(select(func.count()).where(  # counted in the index alone
            r.account_id == self.account_id, r.created_at >= self.period.since, r.created_at < self.period.until))
        return in_period * self.SCAN_SHARE > (self.session.scalar(select(func.max(r.id))) or 0)

    def in_period(self, row_class):
        return (row_class.account_id == self.account_id, row_class.created_at >= self.period.since,
                row_class.created_at < self.period.until)

    def usage(self, bucket) -> list[Any]:
        """(key, model, bucket, evaluation job ARN or None, batch job ARN or None, requests, errors, input,
        output, output of successes, latency ms of successes).

        One grouping, over every record of the period (evaluation jobs' too), for the groups, the bill and the
        trend (each sums these rows its own way)."""
        r = UsageRecord
        ok = r.status == UsageStatus.SUCCESS
        keys = [self.g, r.model_id, bucket, r.evaluation_job_arn, r.batch_job_arn]
        return self.session.execute(select(
            *keys, func.count(), func.sum(case((ok, 0), else_=1)), func.sum(r.input_tokens),
            func.sum(r.output_tokens), func.sum(case((ok, r.output_tokens), else_=0)),
            func.sum(case((ok, r.latency_ms), else_=0)),
        ).where(*self.where_all).group_by(*keys)).all()

    def people(self) -> tuple[dict[Any, tuple[int, int, int, int]], tuple[int, int, int, int]]:
        """Distinct (users, sessions, converted users, converted sessions) that invoked in the period: by key,
        and in all. Converted: named by a conversion recorded in the period.

        The converted ones are few: they are looked up by id in the user and session indexes, not tested
        for on every record; so are the counts in all, which those indexes cover."""
        r, c = UsageRecord, ConversionRow
        converted = {r.user_id: select(c.user_id).where(*self.in_period(c), c.user_id.is_not(None)),
                     r.session_id: select(c.session_id).where(*self.in_period(c), c.session_id.is_not(None))}
        counts = {row[0]: [*row[1:], 0, 0] for row in self.session.execute(
            select(self.g, func.count(distinct(r.user_id)), func.count(distinct(r.session_id)))
            .where(*self.where).group_by(self.g))}
        for i, (ids, theirs) in enumerate(converted.items(), start=2):
            for key, n in self.session.execute(select(self.g, func.count(distinct(ids)))
                                               .where(*self.where_indexed, ids.in_(theirs)).group_by(self.g)):
                counts.setdefault(key, [0, 0, 0, 0])[i] = n
        # in all: each count its own statement, so that each reads its own index
        total = tuple(self.session.scalar(select(func.count(distinct(ids))).where(*self.where_indexed, *more))
                      for ids, more in ((r.user_id, ()), (r.session_id, ()),
                                        (r.user_id, (r.user_id.in_(converted[r.user_id]),)),
                                        (r.session_id, (r.session_id.in_(converted[r.session_id]),))))
        return {key: tuple(n) for key, n in counts.items()}, total

    def percentiles(self) -> tuple[dict[Any, dict[str, dict[str, int | None]]], dict[str, dict[str, int | None]]]:
        """{"latencyMs": {p50, p95, p99}, "firstTokenMs": {...}} over successful invocations: by key, and in all.

        Nearest rank: the smallest value v with at least ceil(n * p / 100) of the n values <= v, that is
        100 * (values <= v) >= n * p in integers. One statement on both databases: each column's values are
        counted per key and value (a few thousand distinct milliseconds, not a row per record), the totals
        sum those counts over the keys, and a running sum over the counts in value order finds the ranks. A
        record without a first token is not counted for it."""
        r = UsageRecord
        ok = (*self.where, r.status == UsageStatus.SUCCESS)
        counts = union_all(*(
            select(self.g.label("k"), literal_column(str(m)).label("m"), value.label("v"), func.count().label("c"))
            .where(*ok, value.is_not(None)).group_by(self.g, value)
            for m, value in enumerate((r.latency_ms, r.first_token_ms)))).cte("value_counts")
        both = union_all(
            select(literal_column("0").label("t"), counts.c.k, counts.c.m, counts.c.v, counts.c.c),
            select(literal_column("1"), null(), counts.c.m, counts.c.v, func.sum(counts.c.c))
            .group_by(counts.c.m, counts.c.v)).subquery("keyed")
        part = [both.c.t, both.c.k, both.c.m]
        running = select(*part, both.c.v, func.sum(both.c.c).over(partition_by=part, order_by=both.c.v,
                                                                   rows=(None, 0)).label("upto"),
                         func.sum(both.c.c).over(partition_by=part).label("n")).subquery("running")
        rows = self.session.execute(select(
            running.c.t, running.c.k, running.c.m,
            *(func.min(case((running.c.upto * 100 >= running.c.n * p, running.c.v))) for p in PERCENTILES),
        ).group_by(running.c.t, running.c.k, running.c.m))
        empty = {name: {f"p{p}": None for p in PERCENTILES} for name in ("latencyMs", "firstTokenMs")}
        by_key: dict[Any, dict[str, dict[str, int | None]]] = {}
        total = {name: dict(values) for name, values in empty.items()}
        for t, k, m, *values in rows:
            slot = total if t else by_key.setdefault(k, {name: dict(v) for name, v in empty.items()})
            slot["firstTokenMs" if m else "latencyMs"].update(
                {f"p{p}": int(v) if v is not None else None for p, v in zip(PERCENTILES, values, strict=True)})
        return by_key, total

    def feedback(self, bucket) -> tuple[dict[Any, tuple[int, ...]], dict[Any, tuple[int, ...]],
                                        dict[Any, tuple[int, ...]]]:
        """(responses, thumbs up, thumbs down, ratings, sum of ratings, ratings of 4 or 5) by key, by domain and
        by trend bucket: one grouping by (model, domain, bucket), summed three ways."""
        f = FeedbackRow
        columns = [func.count(), func.sum(case((f.thumbs == "up", 1), else_=0)),
                   func.sum(case((f.thumbs == "down", 1), else_=0)), func.count(f.rating),
                   func.coalesce(func.sum(f.rating), 0), func.sum(case((f.rating >= 4, 1), else_=0))]
        keys = [f.model_id, f.domain, bucket]
        out: tuple[dict[Any, list[int]], ...] = ({}, {}, {})
        for model, domain, label, *counts in self.session.execute(
                select(*keys, *columns).where(*self.in_period(f)).group_by(*keys)):
            for sums, key in zip(out, (model if self.by == "model" else domain, domain, label), strict=True):
                slot = sums.setdefault(key, [0] * 6)
                for i, n in enumerate(counts):
                    slot[i] += int(n or 0)
        by_key, by_domain, by_bucket = ({key: tuple(n) for key, n in sums.items()} for sums in out)
        return by_key, by_domain, by_bucket

    def revenue(self) -> tuple[dict[Any, float], float]:
        """Revenue in the period from the users active in the period: by key (the users active in that
        group), and in all.

        Revenue is summed per user first, and only users who paid are looked for among the period's
        records, so the DISTINCT runs over the paying users' records, not over every record."""
        r, rev = UsageRecord, RevenueRow
        paid = select(rev.user_id.label("user_id"), func.sum(rev.amount).label("amount")) \
            .where(*self.in_period(rev)).group_by(rev.user_id).subquery("paid")
        result = []
        for key, where in ((self.g, self.where), (None, self.where_indexed)):
            active = select(*([key.label("k")] if key is not None else []), r.user_id.label("user_id")) \
                .where(*where, r.user_id.in_(select(paid.c.user_id))).distinct().subquery("active")
            k = active.c.k if key is not None else null()
            query = select(k, func.sum(paid.c.amount)).join_from(active, paid, paid.c.user_id == active.c.user_id)
            if key is not None:
                query = query.group_by(active.c.k)
            result.append({row[0]: float(row[1] or 0) for row in self.session.execute(query)})
        return result[0], result[1].get(None, 0.0)


def _bucket(dialect: str, moment, hourly: bool):
    """The trend's bucket label of a timestamp column, in SQL: 'YYYY-MM-DD' or 'YYYY-MM-DD HH'."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", moment), "YYYY-MM-DD HH24" if hourly else "YYYY-MM-DD")
    # SQLite keeps timestamps as ISO text ('YYYY-MM-DD HH:MM:SS.ffffff', in UTC as Outcrop writes them).
    return func.substr(moment, 1, 13 if hourly else 10)


def _bucket_starts(period: Period, hourly: bool) -> list[datetime]:
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    start = period.since.replace(minute=0, second=0, microsecond=0)
    if not hourly:
        start = start.replace(hour=0)
    starts = []
    while start < period.until:
        starts.append(start)
        start += step
    return starts


def _label(start: datetime, hourly: bool) -> str:
    return start.strftime("%Y-%m-%d %H" if hourly else "%Y-%m-%d")


def _overlap_hours(start: datetime, end: datetime, window_start: datetime, window_end: datetime) -> float:
    return max(0.0, (min(end, window_end) - max(start, window_start)).total_seconds() / 3600)


class _Pricer:
    """Prices per usage-record model name, resolved once per distinct model, not per record."""

    def __init__(self, session, prices: PriceTable, account_id: str) -> None:
        self.prices = prices
        self.custom_bases = dict(session.execute(select(CustomModelRow.model_arn, CustomModelRow.base_model_id)
                                                 .where(CustomModelRow.account_id == account_id)).all())

    def per_1k(self, model_id: str, batch: bool = False) -> tuple[float, float]:
        """(input, output) per 1,000 tokens; `batch`: of a batch inference job's record (the batch price)."""
        if _is_provisioned(model_id):
            return 0.0, 0.0  # paid by the hour, not by the token
        base = _base_model(model_id, self.custom_bases)
        return self.prices.batch(base) if batch else self.prices.on_demand(base)

    def tokens_cost(self, model_id: str, input_tokens: int, output_tokens: int, batch: bool = False) -> float:
        price_in, price_out = self.per_1k(model_id, batch)
        return input_tokens / 1000 * price_in + output_tokens / 1000 * price_out


def _satisfaction(counts: tuple[int, ...] | None) -> dict[str, Any]:
    responses, up, down, ratings, rating_sum, happy = counts or (0, 0, 0, 0, 0, 0)
    return {"responses": responses, "thumbsUp": up, "thumbsDown": down, "thumbsUpRate": _ratio(up, up + down),
            "ratings": ratings, "meanRating": _ratio(rating_sum, ratings), "csat": _ratio(happy, ratings)}


def _evaluation_scores(db: Database, account_id: str, until: datetime) -> dict[str, dict[str, dict[str, float]]]:
    """category -> metric -> model -> score, newest completed job winning; {} when there are none."""
    scores: dict[str, dict[str, dict[str, float]]] = {}
    job = _evaluation_jobs.c
    with db.session() as session:
        rows = session.execute(select(job.results).where(
            job.account_id == account_id, job.status == "Completed", job.results.is_not(None),
            func.coalesce(job.ended_at, job.created_at) < until,
        ).order_by(func.coalesce(job.ended_at, job.created_at))).all()
    for (results,) in rows:  # completed jobs, oldest first: a handful, never usage records
        tasks = results.get("tasks") if isinstance(results, dict) else None
        for task in tasks if isinstance(tasks, list) else []:
            metrics = task.get("metrics") if isinstance(task, dict) else None
            for metric in metrics if isinstance(metrics, list) else []:
                if not isinstance(metric, dict) or not isinstance(metric.get("byCategory"), dict):
                    continue
                name = str(metric.get("metricName") or metric.get("name") or "score")
                for category, by_model in metric["byCategory"].items():
                    if not isinstance(by_model, dict):
                        continue
                    slot = scores.setdefault(str(category), {}).setdefault(name, {})
                    slot.update({str(m): float(s) for m, s in by_model.items()
                                 if isinstance(s, int | float) and not isinstance(s, bool)})
    return scores


def _guardrail_rates(db: Database, account_id: str, period: Period) -> list[dict[str, Any]]:
    """Guardrail checks and interventions by requestMetadata.domain (None: calls without one, ApplyGuardrail)."""
    check = GuardrailCheckRow
    with db.session() as session:
        rows = session.execute(select(check.domain, func.count(), func.sum(case((check.intervened, 1), else_=0)))
                               .where(check.account_id == account_id, check.checked_at >= period.since,
                                      check.checked_at < period.until).group_by(check.domain)).all()
    return [{"domain": domain, "checks": checks, "interventions": int(interventions or 0),
             "interventionRate": _ratio(int(interventions or 0), checks)}
            for domain, checks, interventions in sorted(rows, key=lambda r: (r[0] is None, str(r[0])))]


def build_report(db: Database, prices: PriceTable, *, account_id: str, since: datetime,
                 until: datetime | None = None, by: str = "model", mu_tokens_per_minute: int,
                 now: datetime | None = None) -> dict[str, Any]:
    """The whole report as a JSON-ready dict (the API returns it as is; the CLI and HTML render it)."""
    if by not in GROUPINGS:
        raise ValidationException(f"groupBy must be one of {', '.join(GROUPINGS)}, got {by!r}")
    now = as_utc(now or utc_now())
    period = Period(as_utc(since), as_utc(until) if until else now)
    if period.since >= period.until:
        raise ValidationException(f"The period is empty: since {period.since:%Y-%m-%dT%H:%M:%SZ} is not before "
                                  f"until {period.until:%Y-%m-%dT%H:%M:%SZ}")
    hourly = period.until - period.since <= HOURLY_UP_TO
    dialect = db.engine.dialect.name
    with db.session() as session, ThreadPoolExecutor(REPORT_THREADS, thread_name_prefix="insights") as pool:
        q = _Query(session, account_id, period, by, dialect)

        def apart(work: Callable[[_Query], Any]) -> Future:
            """The heavy aggregates are independent passes over the period: each runs on a connection of its
            own, so that they use every core (SQLite lets go of the GIL while it steps through a query)."""
            def run() -> Any:
                with db.session() as own:
                    return work(_Query(own, account_id, period, by, dialect, q.large_share))
            return pool.submit(run)

        usage_job = apart(lambda q: q.usage(_bucket(dialect, UsageRecord.created_at, hourly)))
        people_job, ranks_job, revenue_job = apart(_Query.people), apart(_Query.percentiles), apart(_Query.revenue)
        feedback_job = apart(lambda q: q.feedback(_bucket(dialect, FeedbackRow.created_at, hourly)))
        pricer = _Pricer(session, prices, account_id)
        revenue_all = float(session.scalar(select(func.coalesce(func.sum(RevenueRow.amount), 0.0))
                                           .where(*q.in_period(RevenueRow))) or 0.0)
        outcomes = session.execute(select(ConversionRow.name, func.count(), func.sum(ConversionRow.value))
                                   .where(*q.in_period(ConversionRow)).group_by(ConversionRow.name)
                                   .order_by(ConversionRow.name)).all()
        throughputs = session.scalars(select(ProvisionedThroughputRow).where(
            ProvisionedThroughputRow.account_id == account_id, ProvisionedThroughputRow.created_at < period.until,
            ProvisionedThroughputRow.status != ThroughputStatus.FAILED,  # it never served: Bedrock does not bill it
            (ProvisionedThroughputRow.deleted_at.is_(None)) | (ProvisionedThroughputRow.deleted_at > period.since),
        ).order_by(ProvisionedThroughputRow.created_at)).all()
        usage_rows, (people, people_total), (ranks, ranks_total) = (
            usage_job.result(), people_job.result(), ranks_job.result())
        (feedback, feedback_by_domain, trend_feedback), (revenue, revenue_attributed) = (
            feedback_job.result(), revenue_job.result())

    # the grouped usage rows, summed by model for the bill (every record but batch jobs'), by (key, model) for
    # the groups and by (bucket, model) for the trend (the application's records; the trend's cost is every
    # record's, at its price), by (job, model) for the evaluation jobs' share of the bill; batch jobs' records
    # by model and by (batch job, model), at the batch price
    tokens_by_model: dict[str, list[int]] = {}
    by_key_model: dict[tuple[Any, str], list[int]] = {}
    by_bucket_model: dict[tuple[str, str], list[Any]] = {}
    by_job_model: dict[tuple[str, str], list[int]] = {}
    batch_by_model: dict[str, list[int]] = {}
    by_batch_job_model: dict[tuple[str, str], list[int]] = {}
    for key, model, label, job, batch, *sums in usage_rows:
        n, tokens_in, tokens_out = int(sums[0]), int(sums[2] or 0), int(sums[3] or 0)
        slot = by_bucket_model.setdefault((label, model), [0, 0, 0, 0.0])
        slot[3] += pricer.tokens_cost(model, tokens_in, tokens_out, batch=batch is not None)
        if batch is not None:
            tokens = batch_by_model.setdefault(model, [0, 0])
            tokens[0] += tokens_in
            tokens[1] += tokens_out
            of_job = by_batch_job_model.setdefault((batch, model), [0, 0, 0])
            of_job[0] += n
            of_job[1] += tokens_in
            of_job[2] += tokens_out
            continue
        slot = tokens_by_model.setdefault(model, [0, 0])
        slot[0] += tokens_in
        slot[1] += tokens_out
        slot = by_bucket_model[label, model]
        if job is not None:
            slot = by_job_model.setdefault((job, model), [0] * 3)
            slot[0] += n
            slot[1] += tokens_in
            slot[2] += tokens_out
            continue
        slot[0] += n
        slot[1] += tokens_in
        slot[2] += tokens_out
        slot = by_key_model.setdefault((key, model), [0] * 6)
        for i, value in enumerate(sums):
            slot[i] += int(value or 0)
    usage = [(key, model, *sums) for (key, model), sums in by_key_model.items()]
    trend_usage = [(label, model, *sums) for (label, model), sums in by_bucket_model.items()]

    # -- the bill: tokens per model (every record's), hours per provisioned throughput
    on_demand = []
    for model, (tokens_in, tokens_out) in sorted(tokens_by_model.items()):
        if _is_provisioned(model):
            continue
        price_in, price_out = pricer.per_1k(model)
        on_demand.append({"modelId": model, "inputTokens": tokens_in, "outputTokens": tokens_out,
                          "inputPricePer1kTokens": price_in, "outputPricePer1kTokens": price_out,
                          "cost": pricer.tokens_cost(model, tokens_in, tokens_out)})
    provisioned, throughput_cost = [], {}
    for row in throughputs:
        end = min(as_utc(row.deleted_at) if row.deleted_at else now, period.until)
        hours = _overlap_hours(as_utc(row.created_at), end, period.since, period.until)
        price = prices.mu_hour(row.foundation_model_id, row.commitment)
        used = sum(tokens_by_model.get(row.arn, [0, 0]))
        capacity = row.model_units * mu_tokens_per_minute * hours * 60
        cost = row.model_units * hours * price
        throughput_cost[row.arn] = cost
        provisioned.append({"provisionedModelArn": row.arn, "provisionedModelName": row.name,
                            "foundationModelId": row.foundation_model_id, "modelUnits": row.model_units,
                            "commitmentDuration": row.commitment, "modelUnitHours": row.model_units * hours,
                            "pricePerModelUnitHour": price, "cost": cost, "tokens": used,
                            "utilisation": _ratio(used, capacity)})
    batch_lines = []
    for model, (tokens_in, tokens_out) in sorted(batch_by_model.items()):
        price_in, price_out = pricer.per_1k(model, batch=True)
        batch_lines.append({"modelId": model, "inputTokens": tokens_in, "outputTokens": tokens_out,
                            "inputPricePer1kTokens": price_in, "outputPricePer1kTokens": price_out,
                            "cost": pricer.tokens_cost(model, tokens_in, tokens_out, batch=True)})
    bill_total = (sum(item["cost"] for item in on_demand) + sum(item["cost"] for item in batch_lines)
                  + sum(throughput_cost.values()))

    def share_of_hours(model: str, tokens: int) -> float:
        """A slice of traffic's share of a throughput's hours, in proportion to its tokens on it."""
        if model not in throughput_cost or not sum(tokens_by_model[model]):
            return 0.0
        return throughput_cost[model] * tokens / sum(tokens_by_model[model])

    jobs: dict[str, dict[str, Any]] = {}
    for (job, model), (n, tokens_in, tokens_out) in sorted(by_job_model.items()):
        item = jobs.setdefault(job, {"evaluationJobArn": job, "requests": 0, "inputTokens": 0, "outputTokens": 0,
                                     "cost": 0.0})
        item["requests"] += n
        item["inputTokens"] += tokens_in
        item["outputTokens"] += tokens_out
        item["cost"] += pricer.tokens_cost(model, tokens_in, tokens_out) + share_of_hours(model,
                                                                                          tokens_in + tokens_out)
    evaluation_jobs = list(jobs.values())
    evaluation_cost = sum(item["cost"] for item in evaluation_jobs)
    batch_jobs: dict[str, dict[str, Any]] = {}
    for (job, model), (n, tokens_in, tokens_out) in sorted(by_batch_job_model.items()):
        item = batch_jobs.setdefault(job, {"batchJobArn": job, "requests": 0, "inputTokens": 0, "outputTokens": 0,
                                           "cost": 0.0})
        item["requests"] += n
        item["inputTokens"] += tokens_in
        item["outputTokens"] += tokens_out
        item["cost"] += pricer.tokens_cost(model, tokens_in, tokens_out, batch=True)
    batch_cost = sum(item["cost"] for item in batch_lines)

    # -- groups
    groups: dict[Any, dict[str, Any]] = {}
    for key, model, n, errors, tokens_in, tokens_out, ok_out, ok_latency in usage:
        g = groups.setdefault(key, {"requests": 0, "errors": 0, "inputTokens": 0, "outputTokens": 0,
                                    "_ok_out": 0, "_ok_ms": 0, "cost": 0.0})
        tokens_in, tokens_out = int(tokens_in or 0), int(tokens_out or 0)
        g["requests"] += n
        g["errors"] += int(errors or 0)
        g["inputTokens"] += tokens_in
        g["outputTokens"] += tokens_out
        g["_ok_out"] += int(ok_out or 0)
        g["_ok_ms"] += int(ok_latency or 0)
        g["cost"] += pricer.tokens_cost(model, tokens_in, tokens_out) + share_of_hours(model, tokens_in + tokens_out)
    for key in feedback:
        groups.setdefault(key, {"requests": 0, "errors": 0, "inputTokens": 0, "outputTokens": 0,
                                "_ok_out": 0, "_ok_ms": 0, "cost": 0.0})

    def metrics(g: dict[str, Any], users: int, sessions: int, revenue_of_users: float, converted_sessions: int,
                converted_users: int, counts, lat, first) -> dict[str, Any]:
        tokens = g["inputTokens"] + g["outputTokens"]
        empty = {f"p{p}": None for p in PERCENTILES}
        return {
            "requests": g["requests"], "errors": g["errors"], "inputTokens": g["inputTokens"],
            "outputTokens": g["outputTokens"],
            "satisfaction": _satisfaction(counts),
            "arpu": {"activeUsers": users, "revenue": revenue_of_users, "arpu": _ratio(revenue_of_users, users)},
            "conversion": {"sessions": sessions, "convertedSessions": converted_sessions,
                           "conversionRate": _ratio(converted_sessions, sessions), "users": users,
                           "convertedUsers": converted_users, "userConversionRate": _ratio(converted_users, users)},
            "efficiency": {"latencyMs": lat or empty, "firstTokenMs": first or empty,
                           "outputTokensPerSecond": _ratio(g["_ok_out"], g["_ok_ms"] / 1000),
                           "cost": g["cost"], "costPerRequest": _ratio(g["cost"], g["requests"]),
                           "costPer1kTokens": _ratio(g["cost"] * 1000, tokens)},
        }

    rows = []
    for key in sorted(groups, key=lambda k: (k is None, str(k))):
        users, sessions, converted_users, converted_sessions = people.get(key, (0, 0, 0, 0))
        rows.append({"key": key, **metrics(groups[key], users, sessions, revenue.get(key, 0.0),
                                           converted_sessions, converted_users,
                                           feedback.get(key), ranks.get(key, {}).get("latencyMs"),
                                           ranks.get(key, {}).get("firstTokenMs"))})
    total = {name: sum(g[name] for g in groups.values())
             for name in ("requests", "errors", "inputTokens", "outputTokens", "_ok_out", "_ok_ms")}
    total["cost"] = bill_total - evaluation_cost - batch_cost  # the application's: the bill but the jobs' share
    total_feedback = tuple(sum(c[i] for c in feedback.values()) for i in range(6)) if feedback else None
    totals = metrics(total, people_total[0], people_total[1], revenue_attributed, people_total[3],
                     people_total[2], total_feedback, ranks_total.get("latencyMs"),
                     ranks_total.get("firstTokenMs"))
    totals["arpu"]["unattributedRevenue"] = revenue_all - revenue_attributed

    # -- cross-domain: live satisfaction by domain beside evaluation scores by category
    evaluation = _evaluation_scores(db, account_id, period.until)
    by_category = {category.strip().lower(): (category, scores) for category, scores in evaluation.items()}
    cross = []
    for domain in sorted(feedback_by_domain, key=lambda d: (d is None, str(d))):
        match = by_category.pop(str(domain).strip().lower(), None) if domain is not None else None
        cross.append({"domain": domain, **_satisfaction(feedback_by_domain[domain]),
                      "evaluation": match[1] if match else {}})
    for category, scores in sorted(by_category.values(), key=lambda item: item[0]):
        cross.append({"domain": category, **_satisfaction(None), "evaluation": scores})

    # -- the trend: every bucket of the period, empty ones included
    trend_rows: dict[str, dict[str, Any]] = {}
    starts = _bucket_starts(period, hourly)
    for start in starts:
        trend_rows[_label(start, hourly)] = {"start": start, "requests": 0, "inputTokens": 0, "outputTokens": 0,
                                             "cost": 0.0}
    for label, _model, n, tokens_in, tokens_out, cost in trend_usage:
        slot = trend_rows.get(label)
        if slot is None:
            continue
        slot["requests"] += n
        slot["inputTokens"] += tokens_in
        slot["outputTokens"] += tokens_out
        slot["cost"] += cost
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    trend = []
    for label, slot in trend_rows.items():
        start = slot.pop("start")
        for item, row in zip(provisioned, throughputs, strict=True):
            end = min(as_utc(row.deleted_at) if row.deleted_at else now, period.until)
            hours = _overlap_hours(as_utc(row.created_at), end, max(start, period.since),
                                   min(start + step, period.until))
            slot["cost"] += row.model_units * hours * item["pricePerModelUnitHour"]
        trend.append({"bucket": label, **slot, "satisfaction": _satisfaction(trend_feedback.get(label))})

    return {
        "accountId": account_id, "since": period.since.isoformat(), "until": period.until.isoformat(),
        "groupBy": by, "currency": prices.currency, "granularity": "hour" if hourly else "day",
        "totals": totals, "groups": rows,
        "conversions": [{"name": name, "count": count, "value": float(value) if value is not None else None}
                        for name, count, value in outcomes],
        "crossDomain": cross,
        "guardrails": _guardrail_rates(db, account_id, period),
        "bill": {"onDemand": on_demand, "provisioned": provisioned, "total": bill_total, "currency": prices.currency,
                 "evaluationJobs": evaluation_jobs, "evaluationCost": evaluation_cost,
                 "batch": batch_lines, "batchJobs": list(batch_jobs.values()), "batchCost": batch_cost},
        "trend": trend,
    }


def accounts_with_activity(db: Database, since: datetime, until: datetime | None = None) -> list[str]:
    """Accounts that invoked, recorded events or had text checked by a guardrail in the period (the CLI reports
    each of them)."""
    until = as_utc(until or utc_now())
    since = as_utc(since)
    found: set[str] = set()
    with db.session() as session:
        for row_class in (UsageRecord, FeedbackRow, ConversionRow, RevenueRow):
            found.update(session.scalars(select(row_class.account_id).where(
                row_class.created_at >= since, row_class.created_at < until).distinct()))
        found.update(session.scalars(select(ProvisionedThroughputRow.account_id).where(
            ProvisionedThroughputRow.created_at < until,
            ProvisionedThroughputRow.deleted_at.is_(None) | (ProvisionedThroughputRow.deleted_at > since))))
        found.update(session.scalars(select(GuardrailCheckRow.account_id).where(
            GuardrailCheckRow.checked_at >= since, GuardrailCheckRow.checked_at < until).distinct()))
    return sorted(found)
