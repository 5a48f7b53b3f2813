"""Accounts, principals (root, users, roles), access keys, inline policies, idempotency tokens.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(12), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "principals",
        sa.Column("arn", sa.String(2048), primary_key=True),
        sa.Column("account_id", sa.String(12), sa.ForeignKey("accounts.account_id"), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("trust_policy", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("account_id", "kind", "name", name="uq_principals_account_kind_name"),
    )
    op.create_table(
        "access_keys",
        sa.Column("access_key_id", sa.String(128), primary_key=True),
        sa.Column("principal_arn", sa.String(2048), sa.ForeignKey("principals.arn", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "principal_policies",
        sa.Column("principal_arn", sa.String(2048), sa.ForeignKey("principals.arn", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
    )
    op.create_table(
        "idempotency_tokens",
        sa.Column("account_id", sa.String(12), primary_key=True),
        sa.Column("operation", sa.String(64), primary_key=True),
        sa.Column("token", sa.String(256), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("response", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in ("idempotency_tokens", "principal_policies", "access_keys", "principals", "accounts"):
        op.drop_table(table)
