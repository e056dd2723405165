"""Tables of the telemetry feature (see schema/telemetry.py).

Revision ID: 0003
Revises: 0002

Written by hand and frozen: it does not import schema modules.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def _ts(name: str) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "telemetry_batches",
        sa.Column("site", sa.String(255), nullable=False),
        sa.Column("batch_id", sa.String(64), nullable=False),
        _ts("received_at"),
        sa.Column("windows", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("site", "batch_id", name="pk_telemetry_batches"),
    )
    op.create_table(
        "telemetry_windows",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("site", sa.String(255), nullable=False),
        sa.Column("window_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        _ts("start_at"),
        _ts("end_at"),
        _ts("received_at"),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("latency_sum", sa.Float(), nullable=False),
        sa.Column("outcomes", sa.JSON(), nullable=False),
        sa.Column("latency", sa.JSON(), nullable=False),
        sa.Column("batch_sizes", sa.JSON(), nullable=False),
        sa.Column("profiles", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_telemetry_windows"),
        sa.UniqueConstraint("site", "window_id", name="uq_telemetry_windows_site_window_id"),
    )
    op.create_index(
        "ix_telemetry_windows_site_model_version_end_at",
        "telemetry_windows",
        ["site", "model", "version", "end_at"],
    )
    op.create_index(
        "ix_telemetry_windows_model_version_end_at",
        "telemetry_windows",
        ["model", "version", "end_at"],
    )
    op.create_table(
        "telemetry_drops",
        sa.Column("site", sa.String(255), nullable=False),
        sa.Column("spool_id", sa.String(64), nullable=False),
        sa.Column("windows", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("site", "spool_id", name="pk_telemetry_drops"),
    )
    op.create_table(
        "reference_profiles",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.Column("uploaded_by", sa.String(255), nullable=False),
        _ts("uploaded_at"),
        sa.PrimaryKeyConstraint("model_id", "version", name="pk_reference_profiles"),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_reference_profiles_model_id_models"
        ),
        sa.ForeignKeyConstraint(
            ["model_id", "version"],
            ["versions.model_id", "versions.version"],
            name="fk_reference_profiles_model_id_version_versions",
        ),
    )
    op.create_table(
        "drift_settings",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("model_id", name="pk_drift_settings"),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_drift_settings_model_id_models"
        ),
    )


def downgrade() -> None:
    op.drop_table("drift_settings")
    op.drop_table("reference_profiles")
    op.drop_table("telemetry_drops")
    op.drop_index("ix_telemetry_windows_model_version_end_at", table_name="telemetry_windows")
    op.drop_index("ix_telemetry_windows_site_model_version_end_at", table_name="telemetry_windows")
    op.drop_table("telemetry_windows")
    op.drop_table("telemetry_batches")
