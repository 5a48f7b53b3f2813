"""Bucket owners: every bucket belongs to an account, with an optional bucket policy.

Buckets made before this revision have no row; the first time Outcrop opens the object store it gives
each of them to the first account (iam/buckets.py `adopt`), since no earlier version recorded who
created what.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "buckets",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("account_id", sa.String(12), sa.ForeignKey("accounts.account_id"), nullable=False),
        sa.Column("policy", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_buckets_account_id", "buckets", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_buckets_account_id", "buckets")
    op.drop_table("buckets")
