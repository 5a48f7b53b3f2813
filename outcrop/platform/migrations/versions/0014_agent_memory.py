"""Agent memory: the summaries of ended sessions, and what a session needs to be summarized.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agent_sessions") as batch:
        batch.add_column(sa.Column("memory_id", sa.String(100), nullable=True))
        batch.add_column(sa.Column("alias_id", sa.String(10), nullable=True))
        batch.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "agent_memories",
        sa.Column("summary_id", sa.String(32), primary_key=True),
        sa.Column("agent_id", sa.String(10), nullable=False),
        sa.Column("alias_id", sa.String(10), nullable=False),
        sa.Column("memory_id", sa.String(100), nullable=False),
        sa.Column("session_id", sa.String(100), nullable=False),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("session_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_agent_memories_memory", "agent_memories", ["agent_id", "alias_id", "memory_id"])


def downgrade() -> None:
    op.drop_index("ix_agent_memories_memory", "agent_memories")
    op.drop_table("agent_memories")
    with op.batch_alter_table("agent_sessions") as batch:
        batch.drop_column("started_at")
        batch.drop_column("alias_id")
        batch.drop_column("memory_id")
