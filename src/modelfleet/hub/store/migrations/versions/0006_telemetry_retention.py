"""Telemetry retention: per-(site, model, version) roll-ups of deleted windows.

Revision ID: 0006
Revises: 0005

Written by hand and frozen: it does not import schema modules.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "telemetry_rollups",
        sa.Column("site", sa.String(255), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("windows", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("first_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_end", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("site", "model", "version", name="pk_telemetry_rollups"),
    )
    # Retention deletes windows and batch ids by age.
    op.create_index("ix_telemetry_windows_end_at", "telemetry_windows", ["end_at"])
    op.create_index("ix_telemetry_batches_received_at", "telemetry_batches", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_telemetry_batches_received_at", table_name="telemetry_batches")
    op.drop_index("ix_telemetry_windows_end_at", table_name="telemetry_windows")
    op.drop_table("telemetry_rollups")
