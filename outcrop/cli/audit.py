"""`outcrop audit`: read the audit trail of control-plane calls straight from the database.

Newest first. Times are shown and taken in UTC: `--since` is a duration back from now (`30m`,
`1h`, `7d`, `2w`) or an ISO 8601 time (`2025-01-31`, `2025-01-31T09:00:00Z`; no offset means UTC).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import TextIO

from outcrop.iam.audit import query_events
from outcrop.iam.tables import AuditEvent
from outcrop.platform.database import as_utc

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
HEADERS = ("TIME", "PRINCIPAL", "OPERATION", "RESOURCE", "RESULT", "SOURCE IP")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("audit", parents=[common], help="show the audit trail of control-plane calls",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=parse_since, metavar="WHEN",
                        help="only events at or after WHEN: a duration back from now (1h, 7d) or an ISO time (UTC)")
    parser.add_argument("--account", metavar="ID", help="only this account's events")
    parser.add_argument("--operation", metavar="NAME",
                        help="only this operation (CreateCustomModel, or with its service: bedrock:CreateCustomModel)")
    parser.add_argument("--principal", metavar="ARN", help="only calls made by this principal")
    parser.add_argument("--failed", action="store_true", help="only calls that did not succeed")
    parser.add_argument("--limit", type=_positive, default=100, metavar="N", help="at most N events (default 100)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`1h`, `7d`, ... back from `now`, or an ISO 8601 time (naive means UTC)."""
    text = text.strip()
    if match := _DURATION.fullmatch(text):
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        return as_utc(datetime.fromisoformat(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (30m, 1h, 7d, 2w) nor an ISO 8601 time (2025-01-31T09:00:00Z)") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def open_database(args: argparse.Namespace):
    """The configured database, migrated to the newest schema (the trail's table may be new)."""
    from outcrop.platform.config import load_settings
    from outcrop.platform.database import Database

    settings = load_settings(data_dir=args.data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    db.migrate()
    return db


def run(args: argparse.Namespace, db=None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    owned = db is None
    db = db or open_database(args)
    try:
        service, operation = None, args.operation
        if operation and ":" in operation:
            service, operation = operation.split(":", 1)
        events = query_events(db, account_id=args.account, since=args.since, operation=operation,
                              principal_arn=args.principal, failed=args.failed, service=service,
                              limit=args.limit)
    finally:
        if owned:
            db.dispose()
    if args.json:
        for event in events:
            out.write(json.dumps(event.as_dict()) + "\n")
    elif events:
        write_table(events, out)
    else:
        print("no matching audit events", file=sys.stderr)
    return 0


def _row(event: AuditEvent) -> tuple[str, ...]:
    principal = event.principal_arn or (f"(unauthenticated {event.access_key_id})" if event.access_key_id
                                        else "(unauthenticated)")
    operation = f"{event.service}:{event.operation}" if event.service else event.operation
    result = event.result if event.result == "Success" else f"{event.result} ({event.status})"
    return (f"{as_utc(event.event_time):%Y-%m-%d %H:%M:%S}Z", principal, operation, event.resource, result,
            event.source_ip or "-")


def write_table(events: list[AuditEvent], out: TextIO) -> None:
    rows = [HEADERS, *(_row(e) for e in events)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")
