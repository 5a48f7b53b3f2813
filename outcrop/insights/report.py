"""The report: the five business metrics and the bill, for one account and period, by model or by domain.

Every number is aggregated in SQL (SQLAlchemy Core, the same statements on SQLite and PostgreSQL); Python
only combines a handful of group rows and applies the price table per model. Definitions, where the
issue left room:

- The period is [since, until). Invocations count by their time, events (feedback, conversions,
  revenue) by the time they were recorded.
- Satisfaction: thumbs-up rate = up / (up + down); mean rating over rated responses; CSAT = share of
  ratings that are 4 or 5; `responses` counts feedback rows (one per rated request).
- ARPU = revenue recorded in the period from users who invoked in the period / those active users. A
  group's ARPU counts the revenue of the users active in that group, so a user of two models counts in
  both; `unattributedRevenue` (totals) is revenue from users with no invocation in the period.
- Conversion rate = sessions with at least one invocation in the period that also have a conversion in
  the period / sessions with at least one invocation. The same for users (`userConversionRate`).
- Efficiency over successful invocations: latency and time to first token percentiles by nearest rank
  (the value at rank ceil(p/100 * n), found with ROW_NUMBER() over the ordered rows and a rank computed
  in integer arithmetic, which both databases share); output tokens per second = output tokens / seconds
  of request time. Cost counts every record (failed or abandoned generations spent their tokens).
- The bill: on-demand tokens x the model's prices (a custom model is priced as its base), nothing per
  token on a provisioned throughput, whose model-unit hours inside the period are priced by commitment
  term. A group's cost carries its share of a throughput's hours in proportion to its tokens on it;
  hours no traffic used are in the bill and the totals only.
- Utilisation of a provisioned throughput = tokens it processed / tokens its model units could process
  during its hours in the period (`mu_tokens_per_minute` per unit).
- Cross-domain: feedback by `requestMetadata.domain` beside the newest completed evaluation jobs'
  scores by dataset `category` (`results.tasks[].metrics[].byCategory`), matched case-insensitively.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    case,
    column,
    distinct,
    func,
    null,
    or_,
    select,
    table,
)
from sqlalchemy.exc import DBAPIError

from outcrop.catalog.prices import PriceTable
from outcrop.customization.tables import CustomModelRow
from outcrop.errors import ValidationException
from outcrop.iam.audit import as_utc
from outcrop.insights.tables import ConversionRow, FeedbackRow, RevenueRow
from outcrop.platform.database import Database
from outcrop.provisioning.tables import ProvisionedThroughputRow
from outcrop.runtime.usage import SUCCESS, UsageRecord

log = logging.getLogger(__name__)

GROUPINGS = ("model", "domain")
PERCENTILES = (50, 95, 99)
#: A period up to this long is bucketed by hour in the trend; longer ones by day.
HOURLY_UP_TO = timedelta(days=2)

# Evaluation sits above insights and is still being built: its jobs are read through the table's
# schema (a lightweight table clause), not by importing its code.
_evaluation_jobs = table("evaluation_jobs", column("account_id", String), column("status", String),
                         column("job_name", String), column("results", JSON),
                         column("created_at", DateTime(timezone=True)), column("ended_at", DateTime(timezone=True)))


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


class _Query:
    """The SQL of one report: the period's usage records as a subquery `u`, and the group key on it."""

    def __init__(self, session, account_id: str, period: Period, by: str) -> None:
        self.session, self.account_id, self.period, self.by = session, account_id, period, by
        meta = UsageRecord.request_metadata
        # The period's records are copied once into a temporary table with requestMetadata's keys as plain
        # columns: every later query then scans narrow rows instead of parsing JSON again (on SQLite,
        # json_extract on each of a dozen scans cost more than all the aggregation together).
        self.u = Table(f"insights_period_{uuid.uuid4().hex[:12]}", MetaData(),
                       Column("model_id", String(2048)), Column("domain", String(256)),
                       Column("user_id", String(256)), Column("session_id", String(256)),
                       Column("input_tokens", Integer), Column("output_tokens", Integer),
                       Column("latency_ms", Integer), Column("first_token_ms", Integer), Column("ok", Integer),
                       Column("created_at", DateTime(timezone=True)), prefixes=["TEMPORARY"])
        self.u.create(session.connection())
        session.execute(self.u.insert().from_select(
            [c.name for c in self.u.columns],
            select(UsageRecord.model_id, meta["domain"].as_string(), meta["userId"].as_string(),
                   meta["sessionId"].as_string(), UsageRecord.input_tokens, UsageRecord.output_tokens,
                   UsageRecord.latency_ms, UsageRecord.first_token_ms,
                   case((UsageRecord.status == SUCCESS, 1), else_=0), UsageRecord.created_at)
            .where(UsageRecord.account_id == account_id, UsageRecord.created_at >= period.since,
                   UsageRecord.created_at < period.until)))
        self.g = self.u.c.model_id if by == "model" else self.u.c.domain

    def close(self) -> None:
        self.u.drop(self.session.connection())

    def in_period(self, row_class):
        return (row_class.account_id == self.account_id, row_class.created_at >= self.period.since,
                row_class.created_at < self.period.until)

    def usage_by_model(self, key) -> list[Any]:
        """(key, model, requests, errors, input, output, output of successes, latency ms of successes)."""
        u = self.u
        ok = u.c.ok == 1
        keys = [key, u.c.model_id] if key is not None else [u.c.model_id]
        return self.session.execute(select(
            *keys, func.count(), func.sum(case((ok, 0), else_=1)), func.sum(u.c.input_tokens),
            func.sum(u.c.output_tokens), func.sum(case((ok, u.c.output_tokens), else_=0)),
            func.sum(case((ok, u.c.latency_ms), else_=0)),
        ).group_by(*keys)).all()

    def people(self, key) -> dict[Any, tuple[int, int, int, int]]:
        """key -> distinct (users, sessions, converted users, converted sessions) that invoked in the period.

        Converted: named by a conversion recorded in the period. One scan for all four counts."""
        u, c = self.u, ConversionRow

        def converted(mine, theirs):
            return func.count(distinct(case((mine.in_(select(theirs).where(*self.in_period(c), theirs.is_not(None))),
                                             mine))))

        columns = [func.count(distinct(u.c.user_id)), func.count(distinct(u.c.session_id)),
                   converted(u.c.user_id, c.user_id), converted(u.c.session_id, c.session_id)]
        if key is None:
            return {None: tuple(self.session.execute(select(*columns)).one())}
        return {row[0]: tuple(row[1:]) for row in self.session.execute(select(key, *columns).group_by(key))}

    def percentiles(self, key) -> dict[Any, dict[str, dict[str, int | None]]]:
        """key -> {"latencyMs": {p50, p95, p99}, "firstTokenMs": {...}} over successful invocations.

        Nearest rank: the value at rank ceil(n * p / 100) of the ordered values, the rank computed in
        integer arithmetic and found with ROW_NUMBER(), which SQLite and PostgreSQL both have. Both
        columns are ranked in one scan; a record without a first token sorts last and is not counted."""
        u = self.u
        partition = {"partition_by": key} if key is not None else {}
        ttft = u.c.first_token_ms
        ranked = select(
            (key if key is not None else null()).label("k"), u.c.latency_ms.label("lat"), ttft.label("ttft"),
            func.row_number().over(order_by=u.c.latency_ms, **partition).label("r_lat"),
            func.row_number().over(order_by=ttft.asc().nulls_last(), **partition).label("r_ttft"),
            func.count().over(**partition).label("n_lat"), func.count(ttft).over(**partition).label("n_ttft"),
        ).where(u.c.ok == 1).subquery("ranked")
        wanted = {(name, p): (getattr(ranked.c, f"n_{name}") * p + 99) // 100  # ceil(n * p / 100)
                  for name in ("lat", "ttft") for p in PERCENTILES}
        conditions = [getattr(ranked.c, f"r_{name}") == rank for (name, _p), rank in wanted.items()]
        rows = self.session.execute(select(ranked.c.k, ranked.c.lat, ranked.c.ttft, ranked.c.r_lat,
                                           ranked.c.r_ttft, *wanted.values()).where(or_(*conditions)))
        out: dict[Any, dict[str, dict[str, int | None]]] = {}
        for k, lat, first, r_lat, r_ttft, *ranks in rows:
            slot = out.setdefault(k, {"latencyMs": {f"p{p}": None for p in PERCENTILES},
                                      "firstTokenMs": {f"p{p}": None for p in PERCENTILES}})
            for ((name, p), rank) in zip(wanted, ranks, strict=True):
                if name == "lat" and r_lat == rank:
                    slot["latencyMs"][f"p{p}"] = lat
                elif name == "ttft" and r_ttft == rank:
                    slot["firstTokenMs"][f"p{p}"] = first
        return out

    def feedback(self, key) -> dict[Any, tuple[int, int, int, int, int, int]]:
        """key -> (responses, thumbs up, thumbs down, ratings, sum of ratings, ratings of 4 or 5)."""
        f = FeedbackRow
        columns = [func.count(), func.sum(case((f.thumbs == "up", 1), else_=0)),
                   func.sum(case((f.thumbs == "down", 1), else_=0)), func.count(f.rating),
                   func.coalesce(func.sum(f.rating), 0), func.sum(case((f.rating >= 4, 1), else_=0))]
        query = select(key, *columns).where(*self.in_period(f)).group_by(key)
        return {row[0]: tuple(int(x or 0) for x in row[1:]) for row in self.session.execute(query)}

    def revenue(self, key) -> dict[Any, float]:
        """key -> revenue in the period from the users active (in that group) in the period.

        Revenue is summed per user first, and only users who paid are looked for among the period's
        records, so the DISTINCT runs over the paying users' records, not over every record."""
        u, r = self.u, RevenueRow
        paid = select(r.user_id.label("user_id"), func.sum(r.amount).label("amount")) \
            .where(*self.in_period(r)).group_by(r.user_id).subquery("paid")
        active = select(*([key.label("k")] if key is not None else []), u.c.user_id.label("user_id")) \
            .where(u.c.user_id.in_(select(paid.c.user_id))).distinct().subquery("active")
        k = active.c.k if key is not None else null()
        query = select(k, func.sum(paid.c.amount)).join_from(active, paid, paid.c.user_id == active.c.user_id)
        if key is not None:
            query = query.group_by(active.c.k)
        return {row[0]: float(row[1] or 0) for row in self.session.execute(query)}

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

    def per_1k(self, model_id: str) -> tuple[float, float]:
        if _is_provisioned(model_id):
            return 0.0, 0.0  # paid by the hour, not by the token
        return self.prices.on_demand(_base_model(model_id, self.custom_bases))

    def tokens_cost(self, model_id: str, input_tokens: int, output_tokens: int) -> float:
        price_in, price_out = self.per_1k(model_id)
        return input_tokens / 1000 * price_in + output_tokens / 1000 * price_out


def _satisfaction(counts: tuple[int, ...] | None) -> dict[str, Any]:
    responses, up, down, ratings, rating_sum, happy = counts or (0, 0, 0, 0, 0, 0)
    return {"responses": responses, "thumbsUp": up, "thumbsDown": down, "thumbsUpRate": _ratio(up, up + down),
            "ratings": ratings, "meanRating": _ratio(rating_sum, ratings), "csat": _ratio(happy, ratings)}


def _evaluation_scores(db: Database, account_id: str, until: datetime) -> dict[str, dict[str, dict[str, float]]]:
    """category -> metric -> model -> score, newest completed job winning; {} when there are none."""
    scores: dict[str, dict[str, dict[str, float]]] = {}
    job = _evaluation_jobs.c
    try:
        with db.session() as session:
            rows = session.execute(select(job.results).where(
                job.account_id == account_id, job.status == "Completed", job.results.is_not(None),
                func.coalesce(job.ended_at, job.created_at) < until,
            ).order_by(func.coalesce(job.ended_at, job.created_at))).all()
    except DBAPIError:  # a database from before evaluation existed: no scores, not a failed report
        log.warning("evaluation jobs could not be read; the report shows no evaluation scores", exc_info=True)
        return {}
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


def build_report(db: Database, prices: PriceTable, *, account_id: str, since: datetime,
                 until: datetime | None = None, by: str = "model", mu_tokens_per_minute: int,
                 now: datetime | None = None) -> dict[str, Any]:
    """The whole report as a JSON-ready dict (the API returns it as is; the CLI and HTML render it)."""
    if by not in GROUPINGS:
        raise ValidationException(f"groupBy must be one of {', '.join(GROUPINGS)}, got {by!r}")
    now = as_utc(now or datetime.now(UTC))
    period = Period(as_utc(since), as_utc(until) if until else now)
    if period.since >= period.until:
        raise ValidationException(f"The period is empty: since {period.since:%Y-%m-%dT%H:%M:%SZ} is not before "
                                  f"until {period.until:%Y-%m-%dT%H:%M:%SZ}")
    hourly = period.until - period.since <= HOURLY_UP_TO
    dialect = db.engine.dialect.name
    with db.session() as session:
        q = _Query(session, account_id, period, by)
        pricer = _Pricer(session, prices, account_id)
        usage = q.usage_by_model(q.g)
        people, people_total = q.people(q.g), q.people(None)[None]
        ranks, ranks_total = q.percentiles(q.g), q.percentiles(None).get(None, {})
        feedback_key = FeedbackRow.model_id if by == "model" else FeedbackRow.domain
        feedback = q.feedback(feedback_key)
        feedback_by_domain = feedback if by == "domain" else q.feedback(FeedbackRow.domain)
        revenue, revenue_attributed = q.revenue(q.g), q.revenue(None).get(None, 0.0)
        revenue_all = float(session.scalar(select(func.coalesce(func.sum(RevenueRow.amount), 0.0))
                                           .where(*q.in_period(RevenueRow))) or 0.0)
        outcomes = session.execute(select(ConversionRow.name, func.count(), func.sum(ConversionRow.value))
                                   .where(*q.in_period(ConversionRow)).group_by(ConversionRow.name)
                                   .order_by(ConversionRow.name)).all()
        throughputs = session.scalars(select(ProvisionedThroughputRow).where(
            ProvisionedThroughputRow.account_id == account_id, ProvisionedThroughputRow.created_at < period.until,
            (ProvisionedThroughputRow.deleted_at.is_(None)) | (ProvisionedThroughputRow.deleted_at > period.since),
        ).order_by(ProvisionedThroughputRow.created_at)).all()
        bucket = _bucket(dialect, q.u.c.created_at, hourly)
        trend_usage = session.execute(select(bucket, q.u.c.model_id, func.count(), func.sum(q.u.c.input_tokens),
                                             func.sum(q.u.c.output_tokens)).group_by(bucket, q.u.c.model_id)).all()
        feedback_bucket = _bucket(dialect, FeedbackRow.created_at, hourly)
        trend_feedback = q.feedback(feedback_bucket)
        q.close()

    # -- the bill: tokens per model (from the grouped rows), hours per provisioned throughput
    tokens_by_model: dict[str, list[int]] = {}
    for _key, model, _n, _errors, tokens_in, tokens_out, *_ in usage:
        slot = tokens_by_model.setdefault(model, [0, 0])
        slot[0] += int(tokens_in or 0)
        slot[1] += int(tokens_out or 0)
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
    bill_total = sum(item["cost"] for item in on_demand) + sum(throughput_cost.values())

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
        g["cost"] += pricer.tokens_cost(model, tokens_in, tokens_out)
        if model in throughput_cost:  # this group's share of the throughput's hours, by its tokens on it
            g["cost"] += throughput_cost[model] * _ratio(tokens_in + tokens_out, sum(tokens_by_model[model])) \
                if sum(tokens_by_model[model]) else 0.0
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
    total["cost"] = bill_total
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
    for label, model, n, tokens_in, tokens_out in trend_usage:
        slot = trend_rows.get(label)
        if slot is None:
            continue
        slot["requests"] += n
        slot["inputTokens"] += int(tokens_in or 0)
        slot["outputTokens"] += int(tokens_out or 0)
        slot["cost"] += pricer.tokens_cost(model, int(tokens_in or 0), int(tokens_out or 0))
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
        "bill": {"onDemand": on_demand, "provisioned": provisioned, "total": bill_total, "currency": prices.currency},
        "trend": trend,
    }


def accounts_with_activity(db: Database, since: datetime, until: datetime | None = None) -> list[str]:
    """Accounts that invoked or recorded events in the period (the CLI reports each of them)."""
    until = as_utc(until or datetime.now(UTC))
    since = as_utc(since)
    found: set[str] = set()
    with db.session() as session:
        for row_class in (UsageRecord, FeedbackRow, ConversionRow, RevenueRow):
            found.update(session.scalars(select(row_class.account_id).where(
                row_class.created_at >= since, row_class.created_at < until).distinct()))
        found.update(session.scalars(select(ProvisionedThroughputRow.account_id).where(
            ProvisionedThroughputRow.created_at < until,
            ProvisionedThroughputRow.deleted_at.is_(None) | (ProvisionedThroughputRow.deleted_at > since))))
    return sorted(found)
