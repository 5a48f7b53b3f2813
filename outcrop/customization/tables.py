"""Model customization's tables: the jobs as Bedrock shows them, and the custom models they produce."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Float, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.platform.database import Base, UtcDateTime


class JobStatus(StrEnum):
    """A customization job's status, and each stage's in its status details (Bedrock's values)."""

    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPING = "Stopping"
    STOPPED = "Stopped"


class CustomizationJobRow(Base):
    __tablename__ = "customization_jobs"
    __table_args__ = (UniqueConstraint("account_id", "job_name", name="uq_customization_jobs_account_id"),)

    job_arn: Mapped[str] = mapped_column(String(1011), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    job_name: Mapped[str] = mapped_column(String(63))
    #: The job runner's id for the process that does the work.
    runner_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # a JobStatus
    #: The CreateModelCustomizationJob request as validated (hyperparameters resolved under "resolved").
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: {"validationDetails": {...}, "dataProcessingDetails": {...}, "trainingDetails": {...}}.
    status_details: Mapped[dict[str, Any]] = mapped_column(JSON)
    training_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    validation_losses: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)
    output_model_arn: Mapped[str | None] = mapped_column(String(1011), nullable=True)
    failure_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class CustomModelRow(Base):
    __tablename__ = "custom_models"
    __table_args__ = (UniqueConstraint("account_id", "model_name", name="uq_custom_models_account_id"),)

    model_arn: Mapped[str] = mapped_column(String(1011), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    model_name: Mapped[str] = mapped_column(String(63))
    job_arn: Mapped[str] = mapped_column(String(1011))
    base_model_id: Mapped[str] = mapped_column(String(140))
    method: Mapped[str] = mapped_column(String(8))  # lora | full
    #: In Outcrop's own model store (the data dir), never in the user's bucket.
    weights_path: Mapped[str] = mapped_column(String(4096))
    #: The HF folder the weights were trained on (a LoRA adapter needs it to load).
    base_weights_path: Mapped[str] = mapped_column(String(4096))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
