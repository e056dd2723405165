"""Widen evaluations.metric to 32 characters: ``balanced_accuracy`` has 17.

Revision ID: 0016
Revises: 0015

Written by hand and frozen: it does not import schema modules. ``batch_alter_table``
so that SQLite (which cannot alter a column in place) copies the table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.alter_column(
            "metric", existing_type=sa.String(16), type_=sa.String(32), existing_nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.alter_column(
            "metric", existing_type=sa.String(32), type_=sa.String(16), existing_nullable=False
        )
