"""Batch inference: the model invocation jobs, and on usage records the batch job a call was made for (the bill
prices those tokens at the batch price).

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_invocation_jobs",
        sa.Column("job_arn", sa.String(1011), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("job_name", sa.String(63), nullable=False),
        sa.Column("model_id", sa.String(2048), nullable=False),
        sa.Column("runner_job_id", sa.String(32), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("client_request_token", sa.String(256), nullable=True),
        sa.Column("tags", sa.JSON, nullable=True),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("total_records", sa.BigInteger, nullable=True),
        sa.Column("processed_records", sa.BigInteger, nullable=True),
        sa.Column("success_records", sa.BigInteger, nullable=True),
        sa.Column("error_records", sa.BigInteger, nullable=True),
        sa.Column("input_tokens", sa.BigInteger, nullable=True),
        sa.Column("output_tokens", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("account_id", "job_name", name="uq_model_invocation_jobs_account_id"),
    )
    # The failure hook finds a job by its runner job; lists read an account's jobs newest first.
    op.create_index("ix_model_invocation_jobs_runner_job_id", "model_invocation_jobs", ["runner_job_id"])
    op.create_index("ix_model_invocation_jobs_account_id_created_at", "model_invocation_jobs",
                    ["account_id", "created_at"])
    # A plain ADD COLUMN (no table copy on SQLite): usage_records is the largest table.
    op.add_column("usage_records", sa.Column("batch_job_arn", sa.String(1011), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("batch_job_arn")
    op.drop_index("ix_model_invocation_jobs_account_id_created_at", "model_invocation_jobs")
    op.drop_index("ix_model_invocation_jobs_runner_job_id", "model_invocation_jobs")
    op.drop_table("model_invocation_jobs")
