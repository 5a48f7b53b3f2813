"""Agents: the agent and its DRAFT, versions, aliases, InvokeAgent sessions.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("agent_id", sa.String(10), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("draft", sa.JSON, nullable=False),
        sa.Column("prepared", sa.JSON, nullable=True),
        sa.Column("prepared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("latest_version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("account_id", "name", name="uq_agents_account_name"),
    )
    op.create_index("ix_agents_account_created", "agents", ["account_id", "created_at"])
    op.create_table(
        "agent_versions",
        sa.Column("agent_id", sa.String(10), primary_key=True),
        sa.Column("version", sa.String(5), primary_key=True),
        sa.Column("snapshot", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "agent_aliases",
        sa.Column("agent_alias_id", sa.String(10), primary_key=True),
        sa.Column("agent_id", sa.String(10), nullable=False),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(200), nullable=True),
        sa.Column("version", sa.String(5), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("history", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("agent_id", "name", name="uq_agent_aliases_agent_name"),
    )
    op.create_table(
        "agent_sessions",
        sa.Column("agent_id", sa.String(10), primary_key=True),
        sa.Column("session_id", sa.String(100), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("messages", sa.JSON, nullable=False),
        sa.Column("session_attributes", sa.JSON, nullable=False),
        sa.Column("prompt_attributes", sa.JSON, nullable=False),
        sa.Column("pending", sa.JSON, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("agent_sessions")
    op.drop_table("agent_aliases")
    op.drop_table("agent_versions")
    op.drop_index("ix_agents_account_created", "agents")
    op.drop_table("agents")
