"""Functions: the URLs and Python entry points that stand in for Lambda functions (agents' action groups).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No index beyond the unique (account_id, name): it serves the lookups by name and the account's list.
    op.create_table(
        "functions",
        sa.Column("arn", sa.String(140), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.String(2048), nullable=False),
        sa.Column("timeout_seconds", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("account_id", "name", name="uq_functions_account_name"),
    )


def downgrade() -> None:
    op.drop_table("functions")
