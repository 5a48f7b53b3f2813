"""A provisioned throughput's name is unique among its account's live throughputs, in the database: two creates
of one name at once, on two servers, leave one (the check before the insert cannot see the other's row).

Live throughputs that already share a name (left by that race before this revision) keep the oldest's name; the
others are renamed `<name>-<their id>` (cut to fit 63 characters), so that no row is lost: each still holds its
model units and is billed until deleted.

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_LIVE = "deleted_at IS NULL"


def upgrade() -> None:
    table = sa.table("provisioned_throughputs", sa.column("arn", sa.String), sa.column("account_id", sa.String),
                     sa.column("name", sa.String), sa.column("created_at", sa.DateTime),
                     sa.column("deleted_at", sa.DateTime))
    connection = op.get_bind()
    rows = connection.execute(sa.select(table.c.arn, table.c.account_id, table.c.name)
                              .where(table.c.deleted_at.is_(None))
                              .order_by(table.c.created_at, table.c.arn)).all()
    taken = {(account, name) for _, account, name in rows}  # every live name, the later rows' included
    kept: set[tuple[str, str]] = set()
    for arn, account, name in rows:
        if (account, name) in kept:
            base, suffix, n = name, "-" + arn.rsplit("/", 1)[-1], 1
            while (account, name := base[:63 - len(suffix)] + suffix) in taken:
                n += 1
                suffix = f"-{arn.rsplit('/', 1)[-1]}-{n}"
            connection.execute(sa.update(table).where(table.c.arn == arn).values(name=name))
            taken.add((account, name))
        kept.add((account, name))
    op.create_index("uq_provisioned_throughputs_live_name", "provisioned_throughputs", ["account_id", "name"],
                    unique=True, sqlite_where=sa.text(_LIVE), postgresql_where=sa.text(_LIVE))


def downgrade() -> None:
    op.drop_index("uq_provisioned_throughputs_live_name", "provisioned_throughputs")
