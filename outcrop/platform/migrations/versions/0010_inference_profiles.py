"""Application inference profiles and their tags; usage records say what the caller invoked.

A usage record's `model_id` is the local model that answered (what is billed); `invoked_model_id` is what
the caller named: an alias such as anthropic.claude-3-haiku-20240307-v1:0, a system profile id, or an
application profile's ARN. Records from before this revision were made when the two were the same.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_LIVE = "deleted_at IS NULL"


def upgrade() -> None:
    op.create_table(
        "inference_profiles",
        sa.Column("arn", sa.String(2048), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("profile_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.String(200), nullable=True),
        sa.Column("model_id", sa.String(140), nullable=False),
        sa.Column("source_arn", sa.String(2048), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    )
    # The account's list pages by creation time; a runtime call by bare id finds its row by (account, id).
    op.create_index("ix_inference_profiles_account_created", "inference_profiles", ["account_id", "created_at"])
    op.create_index("ix_inference_profiles_account_profile_id", "inference_profiles", ["account_id", "profile_id"])
    # One live profile per name in an account (deleted ones keep their rows, and their names may be reused).
    op.create_index("uq_inference_profiles_live_name", "inference_profiles", ["account_id", "name"], unique=True,
                    sqlite_where=sa.text(_LIVE), postgresql_where=sa.text(_LIVE))
    op.create_table(
        "inference_profile_tags",
        sa.Column("profile_arn", sa.String(2048), sa.ForeignKey("inference_profiles.arn"), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.add_column("usage_records", sa.Column("invoked_model_id", sa.String(2048), nullable=True))


def downgrade() -> None:
    op.drop_column("usage_records", "invoked_model_id")
    op.drop_table("inference_profile_tags")
    op.drop_index("uq_inference_profiles_live_name", "inference_profiles")
    op.drop_index("ix_inference_profiles_account_profile_id", "inference_profiles")
    op.drop_index("ix_inference_profiles_account_created", "inference_profiles")
    op.drop_table("inference_profiles")
