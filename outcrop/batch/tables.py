"""Batch inference's table: the model invocation jobs as Bedrock shows them, with their counts as they grow."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.platform.database import Base, UtcDateTime


class InvocationJobStatus(StrEnum):
    """A batch inference job's status (Bedrock's values, in the order a job goes through them)."""

    #: Created, waiting in the job runner's queue for a process.
    SUBMITTED = "Submitted"
    #: Its process checks the role and reads every record.
    VALIDATING = "Validating"
    #: Validated; its model is being loaded.
    SCHEDULED = "Scheduled"
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    #: The timeout came while records were still being processed: the outputs hold those that were done.
    PARTIALLY_COMPLETED = "PartiallyCompleted"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    #: The timeout came before any record was processed.
    EXPIRED = "Expired"


FINISHED = frozenset({InvocationJobStatus.COMPLETED, InvocationJobStatus.PARTIALLY_COMPLETED,
                      InvocationJobStatus.FAILED, InvocationJobStatus.STOPPED, InvocationJobStatus.EXPIRED})
#: The statuses StopModelInvocationJob accepts.
STOPPABLE = frozenset({InvocationJobStatus.SUBMITTED, InvocationJobStatus.VALIDATING, InvocationJobStatus.SCHEDULED,
                       InvocationJobStatus.IN_PROGRESS})


class ModelInvocationJobRow(Base):
    __tablename__ = "model_invocation_jobs"
    __table_args__ = (UniqueConstraint("account_id", "job_name", name="uq_model_invocation_jobs_account_id"),)

    job_arn: Mapped[str] = mapped_column(String(1011), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    job_name: Mapped[str] = mapped_column(String(63))
    #: The model as the caller named it (an id, an alias, an inference profile), as Get answers it.
    model_id: Mapped[str] = mapped_column(String(2048))
    #: The job runner's id for the process that does the work.
    runner_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(20))  # an InvocationJobStatus
    #: The CreateModelInvocationJob request as validated, without its token, plus "jobId".
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    client_request_token: Mapped[str | None] = mapped_column(String(256), nullable=True)
    #: {key: value}: the create's tags, then TagResource's and UntagResource's.
    tags: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    #: Why the job failed, or how it ended when that needs saying (stopped, timed out).
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Bedrock's counts, kept up to date while the job runs (None until its records are read).
    total_records: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    processed_records: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    success_records: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error_records: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    input_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    output_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    #: submitTime + timeoutDurationInHours: Bedrock's jobExpirationTime.
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
