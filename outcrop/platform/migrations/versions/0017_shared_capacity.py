"""Shared capacity: quota buckets (accounts' on-demand allowances, provisioned throughputs' tokens a minute),
the servers running on this database, and the sequence slots of provisioned throughputs they hold, so that
every server process on one database grants each allowance once.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quota_buckets",
        sa.Column("owner", sa.String(1011), primary_key=True),
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("level", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_table(
        "servers",
        sa.Column("server_id", sa.String(64), primary_key=True),
        sa.Column("seen_at", sa.Float, nullable=False),
    )
    op.create_table(
        "capacity_leases",
        sa.Column("lease_id", sa.String(32), primary_key=True),
        sa.Column("throughput_arn", sa.String(1011), nullable=False),
        sa.Column("server_id", sa.String(64), nullable=False),
        sa.Column("acquired_at", sa.Float, nullable=False),
    )
    op.create_index("ix_capacity_leases_throughput_arn", "capacity_leases", ["throughput_arn"])


def downgrade() -> None:
    op.drop_index("ix_capacity_leases_throughput_arn", "capacity_leases")
    op.drop_table("capacity_leases")
    op.drop_table("servers")
    op.drop_table("quota_buckets")
