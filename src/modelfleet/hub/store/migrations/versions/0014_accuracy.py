"""Ground-truth accuracy windows per site x model x version (see schema/accuracy.py).

Revision ID: 0014
Revises: 0013

Written by hand and frozen: it does not import schema modules.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "accuracy_windows",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            autoincrement=True,
        ),
        sa.Column("site", sa.String(255), nullable=False),
        sa.Column("window_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("labels", sa.BigInteger(), nullable=False),
        sa.Column("correct", sa.BigInteger(), nullable=False),
        sa.Column("abs_error_sum", sa.Float(), nullable=False),
        sa.Column("squared_error_sum", sa.Float(), nullable=False),
        sa.Column("confusion", sa.JSON(), nullable=False),
        sa.Column("dropped", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_accuracy_windows"),
        sa.UniqueConstraint("site", "window_id", name="uq_accuracy_windows_site"),
    )
    op.create_index(
        "ix_accuracy_windows_model_version_end",
        "accuracy_windows",
        ["model", "version", "end_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_accuracy_windows_model_version_end", table_name="accuracy_windows")
    op.drop_table("accuracy_windows")
