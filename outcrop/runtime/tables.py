"""The runtime's tables: usage records (one per invocation) and each account's invocation logging configuration."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, validates

from outcrop.platform.database import Base, UtcDateTime


class UsageStatus(StrEnum):
    """How an invocation ended, when it did not end with an error (then its record holds the error's code)."""

    SUCCESS = "Success"
    #: A generation that stopped because its caller went away (client hung up, stream dropped).
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
    #: The model that answered, as it is billed: a catalog model's id (an alias's local model), or a
    #: provisioned throughput's ARN.
    model_id: Mapped[str] = mapped_column(String(2048))
    #: What the caller named: the same id, an alias (anthropic.claude-...), a system inference profile id or
    #: an application inference profile's ARN. None on records made before inference profiles.
    invoked_model_id: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    operation: Mapped[str] = mapped_column(String(64))
    input_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    first_token_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    stop_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: A `UsageStatus`, or the error code the caller received.
    status: Mapped[str] = mapped_column(String(64))
    request_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: requestMetadata's userId, sessionId, domain and evaluationJobArn, copied out of it when the record is
    #: made (see `_split_metadata`): the report counts and groups by them without parsing JSON per row.
    user_id: Mapped[str | None] = mapped_column(String(METADATA_VALUE_MAX), nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(METADATA_VALUE_MAX), nullable=True)
    domain: Mapped[str | None] = mapped_column(String(METADATA_VALUE_MAX), nullable=True)
    #: set on the calls an evaluation job makes: they are billed, but they are not the application's traffic.
    evaluation_job_arn: Mapped[str | None] = mapped_column(String(EVALUATION_JOB_ARN_MAX), nullable=True)
    #: set on the calls a batch inference job makes for its records (by the job, never from requestMetadata, which
    #: any caller writes): billed at the batch price, and not the application's interactive traffic.
    batch_job_arn: Mapped[str | None] = mapped_column(String(EVALUATION_JOB_ARN_MAX), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    @validates("request_metadata")
    def _split_metadata(self, _key: str, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        """Whoever sets requestMetadata (record_usage, a test, a script) sets its columns with it."""
        for key, name in METADATA_COLUMNS.items():
            setattr(self, name, metadata_value(metadata, key))
        return metadata


class InvocationLoggingConfig(Base):
    __tablename__ = "invocation_logging_configs"

    account_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    #: The `loggingConfig` structure exactly as PutModelInvocationLoggingConfiguration received it.
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class QuotaBucketRow(Base):
    """One allowance (quotas.py): an account's on-demand requests or tokens a minute, or a provisioned
    throughput's tokens a minute; a token bucket every server process draws from, so that N servers on one
    database grant it once, not N times."""

    __tablename__ = "quota_buckets"

    #: An account id, or a provisioned throughput's ARN.
    owner: Mapped[str] = mapped_column(String(1011), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # requests or tokens
    level: Mapped[float] = mapped_column(Float)
    #: When `level` was last brought up to date, in seconds since the epoch (servers share no monotonic clock).
    updated: Mapped[float] = mapped_column(Float)
