"""Usage records: one row per invocation, the ground truth for metering and business metrics."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.iam.principal import Principal
from outcrop.platform.database import Base, Database

log = logging.getLogger(__name__)

SUCCESS = "Success"


class UsageRecord(Base):
    __tablename__ = "usage_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str] = mapped_column(String(12))
    principal_arn: Mapped[str] = mapped_column(String(2048))
    model_id: Mapped[str] = mapped_column(String(2048))
    operation: Mapped[str] = mapped_column(String(64))
    input_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    first_token_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    stop_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: "Success", or the error code the caller received.
    status: Mapped[str] = mapped_column(String(64))
    request_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def record_usage(db: Database, *, request_id: str, principal: Principal, model_id: str, operation: str,
                 input_tokens: int = 0, output_tokens: int = 0, latency_ms: int = 0,
                 first_token_ms: int | None = None, stop_reason: str | None = None, status: str = SUCCESS,
                 request_metadata: dict[str, str] | None = None) -> None:
    """Write one record. A metering failure is logged, never turned into the caller's failure."""
    try:
        with db.session() as session:
            session.add(UsageRecord(
                request_id=request_id, account_id=principal.account_id, principal_arn=principal.arn,
                model_id=model_id, operation=operation, input_tokens=input_tokens, output_tokens=output_tokens,
                latency_ms=latency_ms, first_token_ms=first_token_ms, stop_reason=stop_reason, status=status,
                request_metadata=request_metadata or None, created_at=datetime.now(UTC)))
    except Exception:
        log.exception("could not record usage for request %s", request_id)
