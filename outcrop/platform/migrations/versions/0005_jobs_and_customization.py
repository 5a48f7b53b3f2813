"""The job runner's table, model customization jobs and custom models.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("entry_point", sa.String(256), nullable=False),
        sa.Column("failure_hook", sa.String(256), nullable=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("stop_requested", sa.Boolean, nullable=False),
        sa.Column("progress", sa.JSON, nullable=True),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_table(
        "customization_jobs",
        sa.Column("job_arn", sa.String(1011), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("job_name", sa.String(63), nullable=False),
        sa.Column("runner_job_id", sa.String(32), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("status_details", sa.JSON, nullable=False),
        sa.Column("training_loss", sa.Float, nullable=True),
        sa.Column("validation_losses", sa.JSON, nullable=True),
        sa.Column("output_model_arn", sa.String(1011), nullable=True),
        sa.Column("failure_message", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("account_id", "job_name", name="uq_customization_jobs_account_id"),
    )
    op.create_table(
        "custom_models",
        sa.Column("model_arn", sa.String(1011), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("model_name", sa.String(63), nullable=False),
        sa.Column("job_arn", sa.String(1011), nullable=False),
        sa.Column("base_model_id", sa.String(140), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("weights_path", sa.String(4096), nullable=False),
        sa.Column("base_weights_path", sa.String(4096), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("account_id", "model_name", name="uq_custom_models_account_id"),
    )


def downgrade() -> None:
    for table in ("custom_models", "customization_jobs", "jobs"):
        op.drop_table(table)
