"""Assignment floors: the highest version of a model assigned to a site while the
assignment lasts, so the signed desired state can mark a lower version as a rollback.

Revision ID: 0009
Revises: 0008

Written by hand and frozen: it does not import schema modules.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        # NULL: the assigned version is the highest so far (every row before this revision).
        batch.add_column(sa.Column("floor", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        batch.drop_column("floor")
