"""`outcrop insights`: the business metrics and the bill, read straight from the database.

`report` prints, for each account with activity in the period (or the one `--account` names), user
satisfaction, ARPU, conversion rate, cross-domain performance and efficiency, by model or by domain
(`requestMetadata.domain`), then the bill. `--since` is a duration back from now (`30m`, `1h`, `7d`,
`2w`) or an ISO 8601 time (UTC when it has no offset); the default is the setting `insights_period`.

`feedback`, `conversion` and `revenue` record events as an application does through the JSON API
(`/_outcrop/insights/...`) or `outcrop.insights.client.InsightsClient`.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from outcrop.insights.report import GROUPINGS


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("insights", help="business metrics (satisfaction, ARPU, conversion, efficiency) and cost",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="insights_command", required=True, metavar="SUBCOMMAND")

    report = commands.add_parser("report", parents=[common], help="the report for a period")
    report.add_argument("--since", metavar="WHEN", help="start: a duration back from now (7d) or an ISO time")
    report.add_argument("--until", metavar="WHEN", help="end (default now): a duration back from now or an ISO time")
    report.add_argument("--by", choices=GROUPINGS, default="model", help="group by model or by domain (default model)")
    report.add_argument("--account", metavar="ID", help="only this account (default: every account with activity)")
    report.add_argument("--html", metavar="FILE", help="also write a page with charts to FILE")
    report.add_argument("--json", action="store_true", help="print each account's report as one JSON line")
    report.set_defaults(func=_report)

    feedback = commands.add_parser("feedback", parents=[common], help="record feedback on a response")
    feedback.add_argument("request_id", help="the x-amzn-requestid of the bedrock-runtime call")
    thumbs = feedback.add_mutually_exclusive_group()
    thumbs.add_argument("--up", dest="thumbs", action="store_const", const="up", help="thumbs up")
    thumbs.add_argument("--down", dest="thumbs", action="store_const", const="down", help="thumbs down")
    feedback.add_argument("--rating", type=int, metavar="1-5", help="a rating from 1 to 5")
    feedback.add_argument("--comment", help="free text")
    feedback.set_defaults(func=_feedback)

    conversion = commands.add_parser("conversion", parents=[common], help="record a conversion")
    conversion.add_argument("name", help="the outcome, e.g. purchase")
    conversion.add_argument("--user", help="the userId of requestMetadata")
    conversion.add_argument("--session", help="the sessionId of requestMetadata")
    conversion.add_argument("--value", type=float, help="what it was worth")
    conversion.add_argument("--request-id", help="a request of the session (fills in user and session)")
    conversion.add_argument("--account", metavar="ID", help="the account (default: the first one)")
    conversion.set_defaults(func=_conversion)

    revenue = commands.add_parser("revenue", parents=[common], help="record revenue from a user")
    revenue.add_argument("user", help="the userId of requestMetadata")
    revenue.add_argument("amount", type=float, help="the amount (negative for a refund)")
    revenue.add_argument("--account", metavar="ID", help="the account (default: the first one)")
    revenue.set_defaults(func=_revenue)


def _open(args: argparse.Namespace):
    from outcrop.platform.config import load_settings
    from outcrop.platform.database import Database

    settings = load_settings(data_dir=args.data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    db.migrate()
    return settings, db


def _principal(settings, db, account: str | None):
    from outcrop.errors import ValidationException
    from outcrop.iam.principal import Principal
    from outcrop.iam.service import IamService

    if account:
        return Principal.account_root(account)
    try:
        return Principal.account_root(IamService(db, settings.data_dir).default_account())
    except RuntimeError:
        raise ValidationException("There is no account yet: start `outcrop serve` once, or pass --account") from None


def _report(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from outcrop.catalog.prices import PriceTable
    from outcrop.insights.report import accounts_with_activity, build_report
    from outcrop.insights.service import dumps, parse_time

    out = out or sys.stdout
    settings, db = _open(args)
    try:
        now = datetime.now(UTC)
        since = parse_time(args.since or settings.insights_period, "since", now)
        until = parse_time(args.until, "until", now) if args.until else now
        prices = PriceTable.load(settings.price_table or None)
        accounts = [args.account] if args.account else accounts_with_activity(db, since, until)
        reports = [build_report(db, prices, account_id=account, since=since, until=until, by=args.by,
                                mu_tokens_per_minute=settings.mu_tokens_per_minute, now=now) for account in accounts]
    finally:
        db.dispose()
    if not reports:
        print(f"no invocations or events between {since:%Y-%m-%d %H:%M}Z and {until:%Y-%m-%d %H:%M}Z",
              file=sys.stderr)
        return 0
    if args.json:
        for report in reports:
            out.write(dumps(report) + "\n")
    else:
        from outcrop.insights.text import render

        out.write("\n\n".join(render(report) for report in reports))
    if args.html:
        from outcrop.insights.html import render_html

        Path(args.html).write_text(render_html(reports), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    return 0


def _feedback(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from outcrop.errors import ResourceNotFoundException
    from outcrop.iam.principal import Principal
    from outcrop.insights.events import record_feedback
    from outcrop.runtime.tables import UsageRecord

    settings, db = _open(args)
    try:
        # A local administrator rates on behalf of whichever account made the request.
        with db.session() as session:
            account = session.scalar(select(UsageRecord.account_id).where(UsageRecord.request_id == args.request_id)
                                     .limit(1))
        if account is None:
            raise ResourceNotFoundException(f"No invocation with request id {args.request_id} in any account")
        principal = Principal.account_root(account)
        result = record_feedback(db, principal, args.request_id, thumbs=args.thumbs, rating=args.rating,
                                 comment=args.comment)
    finally:
        db.dispose()
    print(json.dumps(result))
    return 0


def _conversion(args: argparse.Namespace) -> int:
    from outcrop.insights.events import record_conversion

    settings, db = _open(args)
    try:
        result = record_conversion(db, _principal(settings, db, args.account), args.name, user_id=args.user,
                                   session_id=args.session, value=args.value, request_id=args.request_id)
    finally:
        db.dispose()
    print(json.dumps(result))
    return 0


def _revenue(args: argparse.Namespace) -> int:
    from outcrop.insights.events import record_revenue

    settings, db = _open(args)
    try:
        result = record_revenue(db, _principal(settings, db, args.account), args.user, args.amount)
    finally:
        db.dispose()
    print(json.dumps(result))
    return 0
