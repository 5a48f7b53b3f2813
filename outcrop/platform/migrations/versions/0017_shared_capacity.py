"""Many servers, one platform: quota buckets (accounts' on-demand allowances, provisioned throughputs' tokens
a minute), the servers running on this database, the sequence slots of provisioned throughputs they hold, and
the server running each job, so that every server process on one database grants each allowance once and
picks up the jobs of a server that died.

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
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
    )
    with op.batch_alter_table("jobs") as batch:  # the server running a job: another picks it up if it dies
        batch.add_column(sa.Column("server_id", sa.String(64), nullable=True))
    op.create_table(
        "capacity_leases",
        sa.Column("lease_id", sa.String(32), primary_key=True),
        sa.Column("throughput_arn", sa.String(1011), nullable=False),
        sa.Column("server_id", sa.String(64), nullable=False),
        sa.Column("acquired_at", sa.Float, nullable=False),
    )
    op.create_index("ix_capacity_leases_throughput_arn", "capacity_leases", ["throughput_arn"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("server_id")
    op.drop_index("ix_capacity_leases_throughput_arn", "capacity_leases")
    op.drop_table("capacity_leases")
    op.drop_table("servers")
    op.drop_table("quota_buckets")
