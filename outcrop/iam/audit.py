"""The audit trail: one row per control-plane call, who made it, on what, and how it ended.

`record_event` is called by the API door after every control-plane operation (successful or not,
authenticated or not) and, like `record_usage`, never turns a database failure into the caller's
failure: the error is logged and the request goes on. `query_events` reads the trail back, newest
first, with every filter applied in SQL so that a large trail is never loaded whole.

Times are stored in UTC and always come back as aware UTC datetimes, on SQLite (which keeps no
offset) as on PostgreSQL.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select

from outcrop.iam.principal import Principal
from outcrop.iam.tables import AuditEvent
from outcrop.platform.database import Database, as_utc, utc_now

log = logging.getLogger(__name__)

SUCCESS = "Success"


def _clip(value: str | None, column: str) -> str | None:
    """Cut a caller-supplied string to its column's length, so PostgreSQL never refuses the row."""
    if value is None:
        return None
    value = str(value)
    limit = AuditEvent.__table__.c[column].type.length
    return value[:limit] if limit and len(value) > limit else value


def record_event(db: Database, *, service: str, operation: str, result: str = SUCCESS, status: int = 200,
                 principal: Principal | None = None, account_id: str | None = None,
                 principal_arn: str | None = None, access_key_id: str | None = None, resource: str = "*",
                 source_ip: str | None = None, request_id: str | None = None, user_agent: str | None = None,
                 event_time: datetime | None = None) -> None:
    """Write one event. A failure is logged, never turned into the caller's failure.

    `principal` fills `account_id`, `principal_arn` and `access_key_id` where those are not given;
    leave all of them out for a call that was refused before a principal was known.
    """
    try:
        if principal is not None:
            account_id = account_id if account_id is not None else principal.account_id
            principal_arn = principal_arn if principal_arn is not None else principal.arn
            access_key_id = access_key_id if access_key_id is not None else (principal.access_key_id or None)
        event = AuditEvent(
            event_time=event_time or utc_now(),
            account_id=_clip(account_id or "", "account_id"),
            principal_arn=_clip(principal_arn or "", "principal_arn"),
            access_key_id=_clip(access_key_id or None, "access_key_id"),
            service=_clip(service, "service"),
            operation=_clip(operation, "operation"),
            resource=_clip(resource or "*", "resource"),
            result=_clip(result or SUCCESS, "result"),
            status=int(status),
            source_ip=_clip(source_ip or None, "source_ip"),
            request_id=_clip(request_id or None, "request_id"),
            user_agent=_clip(user_agent or None, "user_agent"),
        )
        with db.session() as session:
            session.add(event)
    except Exception:
        log.exception("could not record audit event %s:%s for request %s", service, operation, request_id)


def query_events(db: Database, *, account_id: str | None = None, since: datetime | None = None,
                 operation: str | None = None, principal_arn: str | None = None, result: str | None = None,
                 failed: bool = False, service: str | None = None, limit: int | None = 100) -> list[AuditEvent]:
    """Events newest first. Every filter is exact; `since` is inclusive (naive means UTC);
    `failed` keeps only events whose result is not "Success"; `limit=None` returns them all."""
    query = select(AuditEvent)
    if account_id is not None:
        query = query.where(AuditEvent.account_id == account_id)
    if since is not None:
        query = query.where(AuditEvent.event_time >= as_utc(since))
    if service is not None:
        query = query.where(AuditEvent.service == service)
    if operation is not None:
        query = query.where(AuditEvent.operation == operation)
    if principal_arn is not None:
        query = query.where(AuditEvent.principal_arn == principal_arn)
    if result is not None:
        query = query.where(AuditEvent.result == result)
    if failed:
        query = query.where(AuditEvent.result != SUCCESS)
    query = query.order_by(AuditEvent.event_time.desc(), AuditEvent.id.desc())
    if limit is not None:
        query = query.limit(max(int(limit), 0))
    with db.session() as session:
        return list(session.scalars(query))
