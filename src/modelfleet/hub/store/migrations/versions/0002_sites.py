"""Sites, their enrollment tokens and reports, and per-site model assignments.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02

Written by hand and frozen, like 0001: it does not import the ``schema`` package.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        _ts("created_at"),
        sa.Column("enrollment_hash", sa.String(128), nullable=True),
        _ts("enrollment_expires_at", nullable=True),
        _ts("enrollment_used_at", nullable=True),
        _ts("enrolled_at", nullable=True),
        _ts("last_seen", nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sites"),
        sa.UniqueConstraint("name", name="uq_sites_name"),
        sa.UniqueConstraint("enrollment_hash", name="uq_sites_enrollment_hash"),
    )
    op.create_table(
        "assignments",
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(511), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        _ts("assigned_at"),
        sa.PrimaryKeyConstraint("site_id", "model_id", name="pk_assignments"),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name="fk_assignments_site_id_sites"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_assignments_model_id_models"),
        sa.ForeignKeyConstraint(
            ["model_id", "version"],
            ["versions.model_id", "versions.version"],
            name="fk_assignments_model_id_version_versions",
        ),
    )
    op.create_index("ix_assignments_model_id_version", "assignments", ["model_id", "version"])


def downgrade() -> None:
    op.drop_index("ix_assignments_model_id_version", table_name="assignments")
    op.drop_table("assignments")
    op.drop_table("sites")
