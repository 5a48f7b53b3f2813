"""Insights: feedback, conversions and revenue events; usage records findable by request id.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


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


def downgrade() -> None:
    op.drop_index("ix_usage_records_request_id", "usage_records")
    for table in ("insights_revenue", "insights_conversions", "insights_feedback"):
        op.drop_table(table)
