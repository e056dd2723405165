"""Deployments that follow an alias: the flag, the alias's version last acted on, and why
that version could not start a rollout (see hub/rollout/follow.py).

Revision ID: 0012
Revises: 0011

Written by hand and frozen: it does not import schema modules.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        # Every deployment before this revision pins what it resolved at deploy time.
        batch.add_column(
            sa.Column("follow", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("follow_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("follow_note", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("follow_note")
        batch.drop_column("follow_version")
        batch.drop_column("follow")
