"""IAM's tables: accounts, principals, access keys, inline policies, buckets, the audit trail, ended sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.platform.database import Base, UtcDateTime, as_utc

#: Longest user agent an audit event keeps; the rest is cut (agents can be arbitrarily long and are caller-controlled).
MAX_USER_AGENT = 512


class AccountRow(Base):
    __tablename__ = "accounts"

    account_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class PrincipalRow(Base):
    __tablename__ = "principals"
    __table_args__ = (UniqueConstraint("account_id", "kind", "name", name="uq_principals_account_kind_name"),)

    arn: Mapped[str] = mapped_column(String(2048), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.account_id"))
    kind: Mapped[str] = mapped_column(String(8))  # root | user | role
    name: Mapped[str] = mapped_column(String(64))
    #: Roles only: who may assume the role (an IAM trust policy document).
    trust_policy: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AccessKeyRow(Base):
    __tablename__ = "access_keys"

    access_key_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    principal_arn: Mapped[str] = mapped_column(ForeignKey("principals.arn", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8))  # sigv4 | bearer
    #: sigv4: the secret, encrypted with the data dir's key (SigV4 needs it back to verify);
    #: bearer: a SHA-256 of the token (only ever compared).
    secret: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(8))  # Active | Inactive
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class PolicyRow(Base):
    __tablename__ = "principal_policies"

    principal_arn: Mapped[str] = mapped_column(ForeignKey("principals.arn", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    document: Mapped[str] = mapped_column(Text)


class BucketRow(Base):
    """Every bucket belongs to one account: only its principals (or those its bucket policy names) reach it."""

    __tablename__ = "buckets"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.account_id"))
    #: A bucket policy (a resource policy with Principal elements), or None.
    policy: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


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


class EndedSessionRow(Base):
    """A signed-in page session (console, raters) ended by signing out, until its cookie would have expired."""

    __tablename__ = "ended_sessions"

    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Float)  # Unix time, as the cookie says it
