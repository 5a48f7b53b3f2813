"""Insights: feedback, conversions and revenue events; usage records findable by request id, with their
requestMetadata's userId, sessionId, domain and evaluationJobArn as columns of their own.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# usage_records column <- (requestMetadata key, the column's length)
_METADATA = {"user_id": ("userId", 256), "session_id": ("sessionId", 256), "domain": ("domain", 256),
             "evaluation_job_arn": ("evaluationJobArn", 1011)}


def upgrade() -> None:
    op.create_table(
        "insights_feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("principal_arn", sa.String(2048), nullable=False),
        sa.Column("model_id", sa.String(2048), nullable=False),
        sa.Column("domain", sa.String(256), nullable=True),
        sa.Column("user_id", sa.String(256), nullable=True),
        sa.Column("session_id", sa.String(256), nullable=True),
        sa.Column("thumbs", sa.String(4), nullable=True),
        sa.Column("rating", sa.Integer, nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("invoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("account_id", "request_id", name="uq_insights_feedback_request"),
    )
    op.create_index("ix_insights_feedback_account_created", "insights_feedback", ["account_id", "created_at"])
    op.create_table(
        "insights_conversions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("principal_arn", sa.String(2048), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(256), nullable=True),
        sa.Column("session_id", sa.String(256), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_insights_conversions_account_created", "insights_conversions",
                    ["account_id", "created_at"])
    op.create_table(
        "insights_revenue",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("principal_arn", sa.String(2048), nullable=False),
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("amount", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_insights_revenue_account_created", "insights_revenue", ["account_id", "created_at"])
    # Feedback names an invocation by its request id: without this, each one would scan every usage record.
    op.create_index("ix_usage_records_request_id", "usage_records", ["request_id"])
    # The report groups and counts by requestMetadata's userId, sessionId and domain: as columns, filled when
    # a record is made, no query parses JSON per row. Records from before this revision get them from the JSON
    # (SQLAlchemy renders the JSON access for each backend: json_extract on SQLite, ->> on PostgreSQL).
    # evaluationJobArn marks the calls an evaluation job made: billed, but left out of the application's metrics.
    for name, (_key, length) in _METADATA.items():
        op.add_column("usage_records", sa.Column(name, sa.String(length), nullable=True))
    usage = sa.table("usage_records", sa.column("request_metadata", sa.JSON),
                     *(sa.column(name, sa.String) for name in _METADATA))
    meta = usage.c.request_metadata
    op.execute(usage.update().where(meta.is_not(None)).values(
        {name: sa.func.substr(meta[key].as_string(), 1, length) for name, (key, length) in _METADATA.items()}))
    # The period's distinct users and sessions, and the records of the users who paid or converted, read in
    # these indexes alone (they cover account, id, time and whether an evaluation job made the call), not by
    # visiting each record.
    op.create_index("ix_usage_records_account_user", "usage_records",
                    ["account_id", "user_id", "created_at", "evaluation_job_arn"])
    op.create_index("ix_usage_records_account_session", "usage_records",
                    ["account_id", "session_id", "created_at", "evaluation_job_arn"])


def downgrade() -> None:
    op.drop_index("ix_usage_records_account_session", "usage_records")
    op.drop_index("ix_usage_records_account_user", "usage_records")
    for name in _METADATA:
        op.drop_column("usage_records", name)
    op.drop_index("ix_usage_records_request_id", "usage_records")
    for table in ("insights_revenue", "insights_conversions", "insights_feedback"):
        op.drop_table(table)
