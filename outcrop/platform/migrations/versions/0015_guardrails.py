"""Guardrails: a guardrail's DRAFT and its versions.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "guardrails",
        sa.Column("guardrail_id", sa.String(12), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("draft", sa.JSON, nullable=False),
        sa.Column("latest_version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("account_id", "name", name="uq_guardrails_account_name"),
    )
    op.create_table(
        "guardrail_versions",
        sa.Column("guardrail_id", sa.String(12), primary_key=True),
        sa.Column("version", sa.String(8), primary_key=True),
        sa.Column("snapshot", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("guardrail_versions")
    op.drop_table("guardrails")
