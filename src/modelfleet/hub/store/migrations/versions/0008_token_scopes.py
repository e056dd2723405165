"""Token scopes and last use: which models and sites an ``infer`` token may call, and when
each token was last seen.

Revision ID: 0008
Revises: 0007

Written by hand and frozen: it does not import schema modules.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        # JSON list of model names; NULL: every model.
        batch.add_column(sa.Column("models", sa.JSON(), nullable=True))
        # A label selector over sites (the CLI's syntax); NULL: every site.
        batch.add_column(sa.Column("site_selector", sa.String(512), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("site_selector")
        batch.drop_column("models")
