"""The audit trail of control-plane calls, and each account's model invocation logging configuration.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        # BIGINT on PostgreSQL; SQLite only auto-increments a column declared exactly INTEGER.
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("principal_arn", sa.String(2048), nullable=False),
        sa.Column("access_key_id", sa.String(128), nullable=True),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("operation", sa.String(128), nullable=False),
        sa.Column("resource", sa.String(2048), nullable=False),
        sa.Column("result", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("source_ip", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(512), nullable=True),
    )
    op.create_index("ix_audit_events_account_time", "audit_events", ["account_id", "event_time"])
    op.create_index("ix_audit_events_time", "audit_events", ["event_time"])

    op.create_table(
        "invocation_logging_configs",
        sa.Column("account_id", sa.String(12), primary_key=True),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("invocation_logging_configs")
    op.drop_index("ix_audit_events_time", table_name="audit_events")
    op.drop_index("ix_audit_events_account_time", table_name="audit_events")
    op.drop_table("audit_events")
