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
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, TypeDecorator, select
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.iam.principal import Principal
from outcrop.platform.database import Base, Database

log = logging.getLogger(__name__)

SUCCESS = "Success"
#: Longest user agent kept; the rest is cut (agents can be arbitrarily long and are caller-controlled).
MAX_USER_AGENT = 512


class UtcDateTime(TypeDecorator):
    """A timezone-aware timestamp stored in UTC; naive values (and SQLite's results) are read as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_account_time", "account_id", "event_time"),
        Index("ix_audit_events_time", "event_time"),
    )

    # BIGINT on PostgreSQL; SQLite only auto-increments a column declared exactly INTEGER.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    event_time: Mapped[datetime] = mapped_column(UtcDateTime())
    #: Empty for a call that never resolved to a principal (a bad signature, an unknown key).
    account_id: Mapped[str] = mapped_column(String(12), default="")
    principal_arn: Mapped[str] = mapped_column(String(2048), default="")
    #: The access key the request was signed with, when there was one; names the key behind a failed login.
    access_key_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: The signing name of the service: "bedrock", "bedrock-runtime", "iam", "sts", ...
    service: Mapped[str] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(128))
    #: The ARN acted on, or "*" for calls on no one resource (List*, account settings).
    resource: Mapped[str] = mapped_column(String(2048), default="*")
    #: "Success", or the AWS error code the caller received.
    result: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    source_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(MAX_USER_AGENT), nullable=True)

    def as_dict(self) -> dict[str, Any]:
        """The event as plain JSON types, the time as ISO 8601 in UTC (`...Z`)."""
        return {
            "id": self.id,
            "event_time": iso_utc(self.event_time),
            "account_id": self.account_id,
            "principal_arn": self.principal_arn,
            "access_key_id": self.access_key_id,
            "service": self.service,
            "operation": self.operation,
            "resource": self.resource,
            "result": self.result,
            "status": self.status,
            "source_ip": self.source_ip,
            "request_id": self.request_id,
            "user_agent": self.user_agent,
        }


def iso_utc(moment: datetime) -> str:
    return as_utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
            event_time=event_time or datetime.now(UTC),
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
