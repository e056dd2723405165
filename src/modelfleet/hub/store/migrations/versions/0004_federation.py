"""Tables of the federation feature (see schema/federation.py).

Revision ID: 0004
Revises: 0003

Written by hand and frozen: it does not import schema modules.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "fl_jobs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("base_version", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("current_round", sa.Integer(), nullable=False),
        sa.Column("weights", sa.LargeBinary(), nullable=False),
        sa.Column("strategy_state", sa.LargeBinary(), nullable=True),
        sa.Column("sites", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("result_version", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_fl_jobs"),
    )
    op.create_index("ix_fl_jobs_state", "fl_jobs", ["state"])
    op.create_table(
        "fl_rounds",
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("selected", sa.JSON(), nullable=False),
        sa.Column("weights", sa.LargeBinary(), nullable=False),
        _ts("opened_at"),
        _ts("deadline_at"),
        _ts("closed_at", nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "number", name="pk_fl_rounds"),
        sa.ForeignKeyConstraint(["job_id"], ["fl_jobs.id"], name="fk_fl_rounds_job_id_fl_jobs"),
    )
    op.create_index("ix_fl_rounds_state", "fl_rounds", ["state"])
    op.create_table(
        "fl_updates",
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(255), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("num_examples", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        _ts("received_at"),
        sa.PrimaryKeyConstraint("job_id", "round", "site", name="pk_fl_updates"),
    )
    op.create_table(
        "fl_consent",
        sa.Column("site", sa.String(255), nullable=False),
        sa.Column("declaration", sa.JSON(), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("site", name="pk_fl_consent"),
    )


def downgrade() -> None:
    op.drop_table("fl_consent")
    op.drop_table("fl_updates")
    op.drop_index("ix_fl_rounds_state", table_name="fl_rounds")
    op.drop_table("fl_rounds")
    op.drop_index("ix_fl_jobs_state", table_name="fl_jobs")
    op.drop_table("fl_jobs")
