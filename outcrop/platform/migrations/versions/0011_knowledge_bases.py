"""Knowledge bases: data sources, ingestion jobs, indexed documents, RetrieveAndGenerate sessions.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _times() -> list[sa.Column]:
    return [sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "knowledge_bases",
        sa.Column("arn", sa.String(128), primary_key=True),
        sa.Column("knowledge_base_id", sa.String(10), nullable=False),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(200), nullable=True),
        sa.Column("role_arn", sa.String(2048), nullable=False),
        sa.Column("configuration", sa.JSON, nullable=False),
        sa.Column("storage", sa.JSON, nullable=True),
        sa.Column("embedding_model_id", sa.String(140), nullable=False),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("store_uri", sa.String(2048), nullable=False),
        sa.Column("store_table", sa.String(128), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("failure_reasons", sa.JSON, nullable=True),
        *_times(),
        sa.UniqueConstraint("account_id", "name", name="uq_knowledge_bases_account_name"),
        sa.UniqueConstraint("knowledge_base_id", name="uq_knowledge_bases_id"),
    )
    op.create_index("ix_knowledge_bases_account_created", "knowledge_bases", ["account_id", "created_at"])
    op.create_table(
        "knowledge_base_data_sources",
        sa.Column("data_source_id", sa.String(10), primary_key=True),
        sa.Column("knowledge_base_id", sa.String(10), sa.ForeignKey("knowledge_bases.knowledge_base_id"),
                  nullable=False),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(200), nullable=True),
        sa.Column("configuration", sa.JSON, nullable=False),
        sa.Column("ingestion", sa.JSON, nullable=True),
        sa.Column("deletion_policy", sa.String(8), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("failure_reasons", sa.JSON, nullable=True),
        *_times(),
        sa.UniqueConstraint("knowledge_base_id", "name", name="uq_kb_data_sources_kb_name"),
    )
    op.create_table(
        "knowledge_base_ingestion_jobs",
        sa.Column("ingestion_job_id", sa.String(10), primary_key=True),
        sa.Column("knowledge_base_id", sa.String(10), nullable=False),
        sa.Column("data_source_id", sa.String(10), nullable=False),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("description", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("statistics", sa.JSON, nullable=False),
        sa.Column("failure_reasons", sa.JSON, nullable=True),
        sa.Column("documents", sa.JSON, nullable=True),
        sa.Column("runner_job_id", sa.String(32), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_kb_ingestion_jobs_source_started", "knowledge_base_ingestion_jobs",
                    ["data_source_id", "started_at"])
    op.create_table(
        "knowledge_base_documents",
        sa.Column("data_source_id", sa.String(10), primary_key=True),
        sa.Column("identifier", sa.String(2048), primary_key=True),
        sa.Column("knowledge_base_id", sa.String(10), nullable=False),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("source_type", sa.String(8), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("status_reason", sa.Text, nullable=True),
        sa.Column("chunks", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "knowledge_base_sessions",
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("turns", sa.JSON, nullable=False),
        *_times(),
    )


def downgrade() -> None:
    op.drop_table("knowledge_base_sessions")
    op.drop_table("knowledge_base_documents")
    op.drop_index("ix_kb_ingestion_jobs_source_started", "knowledge_base_ingestion_jobs")
    op.drop_table("knowledge_base_ingestion_jobs")
    op.drop_table("knowledge_base_data_sources")
    op.drop_index("ix_knowledge_bases_account_created", "knowledge_bases")
    op.drop_table("knowledge_bases")
