"""Model evaluation's tables: the jobs as Bedrock shows them, and what human evaluation needs.

Human evaluation maps SageMaker's nouns onto Outcrop's: a *flow definition* (the ARN Bedrock's
`humanWorkflowConfig.flowDefinitionArn` names) is a work team of Outcrop users and how many of them
rate each item. A job's items (one prompt with each model's response) are `human_tasks`; each
rater's answers to one item are one `human_ratings` row, saved as soon as they are submitted.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.platform.database import Base, UtcDateTime


class JobStatus(StrEnum):
    """An evaluation job's status (Bedrock's values; Deleting is only ever answered, never stored)."""

    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    DELETING = "Deleting"


class EvaluationJobRow(Base):
    __tablename__ = "evaluation_jobs"
    __table_args__ = (UniqueConstraint("account_id", "job_name", name="uq_evaluation_jobs_account_id"),)

    job_arn: Mapped[str] = mapped_column(String(1011), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    job_name: Mapped[str] = mapped_column(String(63))
    job_type: Mapped[str] = mapped_column(String(16))  # Automated | Human
    #: The job runner's id for the process that generates the responses and scores them.
    runner_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # a JobStatus
    #: The CreateEvaluationJob request as validated, plus "jobId" (the 12-character id in the ARN).
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The report's JSON summary once the job completed (`outcrop.evaluation.report`).
    results: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    failure_messages: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class FlowDefinitionRow(Base):
    """A work team: the Outcrop users who rate, and how many of them rate each item."""

    __tablename__ = "flow_definitions"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_flow_definitions_account_id"),)

    arn: Mapped[str] = mapped_column(String(1024), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    name: Mapped[str] = mapped_column(String(63))
    #: IAM user ARNs of the raters, all in `account_id`.
    members: Mapped[list[str]] = mapped_column(JSON)
    workers_per_item: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class HumanTaskRow(Base):
    """One item to rate: a prompt of a dataset and each model's response to it."""

    __tablename__ = "human_tasks"

    task_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_arn: Mapped[str] = mapped_column(String(1011), index=True)
    #: Order of presentation within the job (dataset after dataset, record after record).
    position: Mapped[int] = mapped_column(Integer)
    task_type: Mapped[str] = mapped_column(String(63))
    dataset_name: Mapped[str] = mapped_column(String(63))
    #: The input record: {"prompt", "referenceResponse"?, "category"?}.
    record: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: [{"modelIdentifier", "response"}], in the order of the job's inferenceConfig.models.
    responses: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    ratings_needed: Mapped[int] = mapped_column(Integer)


class HumanRatingRow(Base):
    """One rater's answers to every metric of one item."""

    __tablename__ = "human_ratings"
    __table_args__ = (UniqueConstraint("task_id", "rater_arn", name="uq_human_ratings_task_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(32), index=True)
    job_arn: Mapped[str] = mapped_column(String(1011), index=True)
    rater_arn: Mapped[str] = mapped_column(String(2048))
    #: {metric name: value}; the value's form depends on the metric's ratingMethod.
    values: Mapped[dict[str, Any]] = mapped_column(JSON)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
