"""One row per model invocation: who, which model, tokens, latency, outcome, request metadata.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("principal_arn", sa.String(2048), nullable=False),
        sa.Column("model_id", sa.String(2048), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Integer, nullable=False),
        sa.Column("first_token_ms", sa.Integer, nullable=True),
        sa.Column("stop_reason", sa.String(32), nullable=True),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("request_metadata", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_usage_records_account_created", "usage_records", ["account_id", "created_at"])
    op.create_index("ix_usage_records_model_created", "usage_records", ["model_id", "created_at"])


def downgrade() -> None:
    op.drop_table("usage_records")
