"""Guardrail checks: one row per text a guardrail checked, for the intervention rate per domain.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "guardrail_checks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("guardrail_id", sa.String(12), nullable=False),
        sa.Column("version", sa.String(8), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("intervened", sa.Boolean, nullable=False),
        sa.Column("domain", sa.String(256), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_guardrail_checks_account_time", "guardrail_checks", ["account_id", "checked_at"])


def downgrade() -> None:
    op.drop_index("ix_guardrail_checks_account_time", "guardrail_checks")
    op.drop_table("guardrail_checks")
