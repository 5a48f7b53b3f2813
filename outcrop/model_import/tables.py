"""Model import's tables: the import jobs as Bedrock shows them, and the imported models they leave."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.platform.database import Base, UtcDateTime


class ImportJobStatus(StrEnum):
    """A model import job's status (Bedrock's ModelImportJobStatus)."""

    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"


class ModelImportJobRow(Base):
    __tablename__ = "model_import_jobs"
    __table_args__ = (UniqueConstraint("account_id", "job_name", name="uq_model_import_jobs_account_id"),)

    job_arn: Mapped[str] = mapped_column(String(1011), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    job_name: Mapped[str] = mapped_column(String(63))
    imported_model_name: Mapped[str] = mapped_column(String(63))
    #: The job runner's id for the process that copies and checks the folder.
    runner_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # an ImportJobStatus
    #: The CreateModelImportJob request as validated, plus "jobId", "modelId" and the folder's "architecture".
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: Set when the job completes.
    imported_model_arn: Mapped[str | None] = mapped_column(String(1011), nullable=True)
    failure_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class ImportedModelRow(Base):
    __tablename__ = "imported_models"
    __table_args__ = (UniqueConstraint("account_id", "model_name", name="uq_imported_models_account_id"),)

    model_arn: Mapped[str] = mapped_column(String(1011), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    model_name: Mapped[str] = mapped_column(String(63))
    job_arn: Mapped[str] = mapped_column(String(1011))
    job_name: Mapped[str] = mapped_column(String(63))
    #: The folder it was imported from (GetImportedModel's modelDataSource).
    s3_uri: Mapped[str] = mapped_column(String(1024))
    #: config.json's model_type (llama, mistral, qwen2...): GetImportedModel's modelArchitecture.
    architecture: Mapped[str] = mapped_column(String(64))
    #: The InvokeModel body it answers natively (runtime/formats.py): its family's, as Bedrock asks.
    native_format: Mapped[str] = mapped_column(String(32))
    #: Whether its tokenizer has a chat template (Bedrock's instructSupported).
    instruct_supported: Mapped[bool] = mapped_column(Boolean)
    context_length: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    #: In Outcrop's own model store (the data dir), never in the user's bucket.
    weights_path: Mapped[str] = mapped_column(String(4096))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
