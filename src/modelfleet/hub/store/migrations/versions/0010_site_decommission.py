"""Decommissioned sites: when the operator told a site to wipe its models and cache.

Revision ID: 0010
Revises: 0009

Written by hand and frozen: it does not import schema modules.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        # NULL: in service (every site before this revision).
        batch.add_column(sa.Column("decommissioned_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.drop_column("decommissioned_at")
