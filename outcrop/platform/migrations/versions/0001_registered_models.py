"""Models that users register from their own folders or GGUF files.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registered_models",
        sa.Column("model_id", sa.String(140), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("path", sa.String(4096), nullable=False),
        sa.Column("weights_format", sa.String(16), nullable=False),
        sa.Column("output_modality", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("registered_models")
