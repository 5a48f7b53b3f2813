"""Knowledge bases, their data sources, ingestion jobs, the documents each source has indexed, and the
sessions of RetrieveAndGenerate. The chunks and vectors live in the vector store (knowledge/store.py), not
here: these tables say what was indexed from where, so that a re-sync knows what changed."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.platform.database import Base, UtcDateTime


class KnowledgeBaseStatus(StrEnum):
    """Bedrock's `KnowledgeBaseStatus` (the values Outcrop passes through)."""

    CREATING = "CREATING"
    ACTIVE = "ACTIVE"
    DELETING = "DELETING"
    UPDATING = "UPDATING"
    FAILED = "FAILED"


class DataSourceStatus(StrEnum):
    AVAILABLE = "AVAILABLE"
    DELETING = "DELETING"
    DELETE_UNSUCCESSFUL = "DELETE_UNSUCCESSFUL"


class IngestionJobStatus(StrEnum):
    STARTING = "STARTING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"


class DocumentStatus(StrEnum):
    """Bedrock's `DocumentStatus`, as a document of a data source moves through ingestion."""

    STARTING = "STARTING"
    IN_PROGRESS = "IN_PROGRESS"
    INDEXED = "INDEXED"
    FAILED = "FAILED"
    DELETING = "DELETING"
    NOT_FOUND = "NOT_FOUND"


class KnowledgeBaseRow(Base):
    __tablename__ = "knowledge_bases"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_knowledge_bases_account_name"),
                      UniqueConstraint("knowledge_base_id", name="uq_knowledge_bases_id"))

    #: `arn:aws:bedrock:REGION:ACCOUNT:knowledge-base/ID`
    arn: Mapped[str] = mapped_column(String(128), primary_key=True)
    #: Bedrock's 10-character id, unique across accounts (the runtime names a knowledge base by id alone).
    knowledge_base_id: Mapped[str] = mapped_column(String(10))
    account_id: Mapped[str] = mapped_column(String(12))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(200), nullable=True)
    role_arn: Mapped[str] = mapped_column(String(2048))
    #: `knowledgeBaseConfiguration` and `storageConfiguration` as the caller gave them.
    configuration: Mapped[dict[str, Any]] = mapped_column(JSON)
    storage: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: The catalog model that embeds documents and queries, and the size of its vectors.
    embedding_model_id: Mapped[str] = mapped_column(String(140))
    dimension: Mapped[int] = mapped_column(Integer)
    #: Where the vector store keeps this knowledge base: a folder under the data dir, or s3://bucket/prefix.
    store_uri: Mapped[str] = mapped_column(String(2048))
    store_table: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(24))  # a KnowledgeBaseStatus
    failure_reasons: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class DataSourceRow(Base):
    __tablename__ = "knowledge_base_data_sources"
    __table_args__ = (UniqueConstraint("knowledge_base_id", "name", name="uq_kb_data_sources_kb_name"),)

    data_source_id: Mapped[str] = mapped_column(String(10), primary_key=True)
    knowledge_base_id: Mapped[str] = mapped_column(String(10), ForeignKey("knowledge_bases.knowledge_base_id"))
    account_id: Mapped[str] = mapped_column(String(12))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: `dataSourceConfiguration` (S3 or CUSTOM) and `vectorIngestionConfiguration` as given.
    configuration: Mapped[dict[str, Any]] = mapped_column(JSON)
    ingestion: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    deletion_policy: Mapped[str] = mapped_column(String(8))  # DELETE | RETAIN
    status: Mapped[str] = mapped_column(String(24))  # a DataSourceStatus
    failure_reasons: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class IngestionJobRow(Base):
    __tablename__ = "knowledge_base_ingestion_jobs"

    ingestion_job_id: Mapped[str] = mapped_column(String(10), primary_key=True)
    knowledge_base_id: Mapped[str] = mapped_column(String(10))
    data_source_id: Mapped[str] = mapped_column(String(10))
    account_id: Mapped[str] = mapped_column(String(12))
    description: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # an IngestionJobStatus
    #: Bedrock's IngestionJobStatistics (numberOfDocumentsScanned, ...), updated as the job goes.
    statistics: Mapped[dict[str, int]] = mapped_column(JSON)
    failure_reasons: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    #: Direct ingestion (IngestKnowledgeBaseDocuments) runs as a job too: the documents it was given.
    #: SQL NULL for a sync (none_as_null): the lists of jobs select syncs by it.
    documents: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    runner_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class DocumentRow(Base):
    """One document of a data source as the index has it: what a re-sync compares against."""

    __tablename__ = "knowledge_base_documents"

    data_source_id: Mapped[str] = mapped_column(String(10), primary_key=True)
    #: The document's s3:// URI, or a custom document's identifier.
    identifier: Mapped[str] = mapped_column(String(2048), primary_key=True)
    knowledge_base_id: Mapped[str] = mapped_column(String(10))
    account_id: Mapped[str] = mapped_column(String(12))
    source_type: Mapped[str] = mapped_column(String(8))  # S3 | CUSTOM
    #: A digest of the document's bytes and of its metadata: unchanged means skipped on the next sync.
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(24))  # a DocumentStatus
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class RagSessionRow(Base):
    """A RetrieveAndGenerate conversation (`sessionId`): the turns so far, so a follow-up question is
    answered in their light."""

    __tablename__ = "knowledge_base_sessions"

    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    #: [{"question": ..., "answer": ...}, ...], oldest first.
    turns: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
