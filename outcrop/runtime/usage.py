"""Usage records: one row per invocation, the ground truth for metering and business metrics."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, validates

from outcrop.iam.principal import Principal
from outcrop.platform.database import Base, Database

log = logging.getLogger(__name__)

SUCCESS = "Success"
#: The status of a generation that stopped because its caller went away (client hung up, stream dropped).
CANCELLED = "Cancelled"
#: requestMetadata keys kept as columns of their own (the Insights report groups and counts by them, and
#: leaves evaluation jobs' calls out of the application's metrics), and the longest value a column keeps
#: (Bedrock's own limit on a requestMetadata value; an evaluation job's ARN, which Outcrop itself sets, is
#: kept whole: Bedrock's longest evaluation job ARN is 1011 characters).
METADATA_COLUMNS = {"userId": "user_id", "sessionId": "session_id", "domain": "domain",
                    "evaluationJobArn": "evaluation_job_arn"}
METADATA_VALUE_MAX = 256
EVALUATION_JOB_ARN_MAX = 1011
METADATA_LENGTHS = {"evaluationJobArn": EVALUATION_JOB_ARN_MAX}


def metadata_value(metadata: Any, key: str) -> str | None:
    """One requestMetadata value as its column keeps it: a string (cut to the column's length) or None."""
    value = metadata.get(key) if isinstance(metadata, dict) else None
    return value[:METADATA_LENGTHS.get(key, METADATA_VALUE_MAX)] if isinstance(value, str) else None


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
    #: requestMetadata's userId, sessionId, domain and evaluationJobArn, copied out of it when the record is
    #: made (see `_split_metadata`): the report counts and groups by them without parsing JSON per row.
    user_id: Mapped[str | None] = mapped_column(String(METADATA_VALUE_MAX), nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(METADATA_VALUE_MAX), nullable=True)
    domain: Mapped[str | None] = mapped_column(String(METADATA_VALUE_MAX), nullable=True)
    #: set on the calls an evaluation job makes: they are billed, but they are not the application's traffic.
    evaluation_job_arn: Mapped[str | None] = mapped_column(String(EVALUATION_JOB_ARN_MAX), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    @validates("request_metadata")
    def _split_metadata(self, _key: str, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        """Whoever sets requestMetadata (record_usage, a test, a script) sets its columns with it."""
        for key, name in METADATA_COLUMNS.items():
            setattr(self, name, metadata_value(metadata, key))
        return metadata


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
