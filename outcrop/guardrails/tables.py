"""Guardrails: a guardrail's DRAFT and its numbered versions, each one JSON document of policies as GetGuardrail
returns them (a version is a snapshot of the DRAFT, and enforcement reads one document per call)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.platform.database import Base, UtcDateTime


class GuardrailStatus(StrEnum):
    """Bedrock's `GuardrailStatus` (the values Outcrop passes through: changes take effect at once)."""

    READY = "READY"
    DELETING = "DELETING"


class GuardrailRow(Base):
    __tablename__ = "guardrails"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_guardrails_account_name"),)

    #: 12 lower-case letters and digits, as Bedrock's; the ARN is `arn:aws:bedrock:REGION:ACCOUNT:guardrail/ID`.
    guardrail_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    name: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(16))  # a GuardrailStatus
    #: {"description", "blockedInputMessaging", "blockedOutputsMessaging", "topicPolicy", "wordPolicy", ...}.
    draft: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The highest numbered version made so far (versions count up from 1, never reused).
    latest_version: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class GuardrailVersionRow(Base):
    __tablename__ = "guardrail_versions"

    guardrail_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    version: Mapped[str] = mapped_column(String(8), primary_key=True)
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class GuardrailCheckRow(Base):
    """One check of text by a guardrail on a call (Converse, InvokeModel, an agent, RetrieveAndGenerate,
    ApplyGuardrail), intervening or not: the insights report's intervention rate per domain is interventions
    over checks. The audit trail holds the interventions' details."""

    __tablename__ = "guardrail_checks"
    __table_args__ = (Index("ix_guardrail_checks_account_time", "account_id", "checked_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(12))
    guardrail_id: Mapped[str] = mapped_column(String(12))
    version: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(8))  # INPUT or OUTPUT
    intervened: Mapped[bool] = mapped_column(Boolean)
    #: The call's requestMetadata.domain (Converse, InvokeModel), or None.
    domain: Mapped[str | None] = mapped_column(String(256), nullable=True)
    request_id: Mapped[str] = mapped_column(String(64))
    checked_at: Mapped[datetime] = mapped_column(UtcDateTime())
