"""Custom model import: the import jobs and the imported models they leave.

Revision ID: 0020
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_import_jobs",
        sa.Column("job_arn", sa.String(1011), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("job_name", sa.String(63), nullable=False),
        sa.Column("imported_model_name", sa.String(63), nullable=False),
        sa.Column("runner_job_id", sa.String(32), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("imported_model_arn", sa.String(1011), nullable=True),
        sa.Column("failure_message", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("account_id", "job_name", name="uq_model_import_jobs_account_id"),
    )
    # The failure hook finds its job by the runner's id.
    op.create_index("ix_model_import_jobs_runner_job_id", "model_import_jobs", ["runner_job_id"])
    op.create_table(
        "imported_models",
        sa.Column("model_arn", sa.String(1011), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("model_name", sa.String(63), nullable=False),
        sa.Column("job_arn", sa.String(1011), nullable=False),
        sa.Column("job_name", sa.String(63), nullable=False),
        sa.Column("s3_uri", sa.String(1024), nullable=False),
        sa.Column("architecture", sa.String(64), nullable=False),
        sa.Column("native_format", sa.String(32), nullable=False),
        sa.Column("instruct_supported", sa.Boolean, nullable=False),
        sa.Column("context_length", sa.Integer, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("weights_path", sa.String(4096), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("account_id", "model_name", name="uq_imported_models_account_id"),
    )


def downgrade() -> None:
    op.drop_table("imported_models")
    op.drop_index("ix_model_import_jobs_runner_job_id", table_name="model_import_jobs")
    op.drop_table("model_import_jobs")
