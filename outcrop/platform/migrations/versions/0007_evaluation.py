"""Evaluation jobs, flow definitions (work teams), human tasks and ratings.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evaluation_jobs",
        sa.Column("job_arn", sa.String(1011), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("job_name", sa.String(63), nullable=False),
        sa.Column("job_type", sa.String(16), nullable=False),
        sa.Column("runner_job_id", sa.String(32), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("results", sa.JSON, nullable=True),
        sa.Column("failure_messages", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("account_id", "job_name", name="uq_evaluation_jobs_account_id"),
    )
    op.create_table(
        "flow_definitions",
        sa.Column("arn", sa.String(1024), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("members", sa.JSON, nullable=False),
        sa.Column("workers_per_item", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("account_id", "name", name="uq_flow_definitions_account_id"),
    )
    op.create_table(
        "human_tasks",
        sa.Column("task_id", sa.String(32), primary_key=True),
        sa.Column("job_arn", sa.String(1011), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("task_type", sa.String(63), nullable=False),
        sa.Column("dataset_name", sa.String(63), nullable=False),
        sa.Column("record", sa.JSON, nullable=False),
        sa.Column("responses", sa.JSON, nullable=False),
        sa.Column("ratings_needed", sa.Integer, nullable=False),
    )
    op.create_index("ix_human_tasks_job_arn", "human_tasks", ["job_arn"])
    op.create_table(
        "human_ratings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(32), nullable=False),
        sa.Column("job_arn", sa.String(1011), nullable=False),
        sa.Column("rater_arn", sa.String(2048), nullable=False),
        sa.Column("values", sa.JSON, nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("task_id", "rater_arn", name="uq_human_ratings_task_id"),
    )
    op.create_index("ix_human_ratings_task_id", "human_ratings", ["task_id"])
    op.create_index("ix_human_ratings_job_arn", "human_ratings", ["job_arn"])


def downgrade() -> None:
    for table in ("human_ratings", "human_tasks", "flow_definitions", "evaluation_jobs"):
        op.drop_table(table)
