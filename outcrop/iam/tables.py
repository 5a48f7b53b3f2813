"""IAM's tables: accounts, principals, access keys, inline policies."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.platform.database import Base


class AccountRow(Base):
    __tablename__ = "accounts"

    account_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PrincipalRow(Base):
    __tablename__ = "principals"
    __table_args__ = (UniqueConstraint("account_id", "kind", "name", name="uq_principals_account_kind_name"),)

    arn: Mapped[str] = mapped_column(String(2048), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.account_id"))
    kind: Mapped[str] = mapped_column(String(8))  # root | user | role
    name: Mapped[str] = mapped_column(String(64))
    #: Roles only: who may assume the role (an IAM trust policy document).
    trust_policy: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AccessKeyRow(Base):
    __tablename__ = "access_keys"

    access_key_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    principal_arn: Mapped[str] = mapped_column(ForeignKey("principals.arn", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8))  # sigv4 | bearer
    #: sigv4: the secret, encrypted with the data dir's key (SigV4 needs it back to verify);
    #: bearer: a SHA-256 of the token (only ever compared).
    secret: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(8))  # Active | Inactive
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


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
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
