"""Provisioned throughputs.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provisioned_throughputs",
        sa.Column("arn", sa.String(1011), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("model_arn", sa.String(1011), nullable=False),
        sa.Column("desired_model_arn", sa.String(1011), nullable=False),
        sa.Column("foundation_model_id", sa.String(140), nullable=False),
        sa.Column("model_units", sa.Integer, nullable=False),
        sa.Column("commitment", sa.String(16), nullable=True),
        sa.Column("commitment_expiration", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_message", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_provisioned_throughputs_account", "provisioned_throughputs", ["account_id", "created_at"])


def downgrade() -> None:
    op.drop_table("provisioned_throughputs")
