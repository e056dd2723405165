"""Evaluations of model versions on the sites' labelled data (see schema/evaluations.py).

Revision ID: 0015
Revises: 0014

Written by hand and frozen: it does not import schema modules.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "evaluations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("refs", sa.JSON(), nullable=False),
        sa.Column("selector", sa.Text(), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("min_samples", sa.Integer(), nullable=False),
        sa.Column("data", sa.String(255), nullable=True),
        sa.Column("rows", sa.String(16), nullable=False),
        sa.Column("sites", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("winner", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_evaluations"),
    )
    op.create_index("ix_evaluations_model", "evaluations", ["model"])
    op.create_index("ix_evaluations_state", "evaluations", ["state"])
    op.create_table(
        "evaluation_answers",
        sa.Column("evaluation_id", sa.String(32), nullable=False),
        sa.Column("site", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("evaluation_id", "site", name="pk_evaluation_answers"),
    )


def downgrade() -> None:
    op.drop_table("evaluation_answers")
    op.drop_index("ix_evaluations_state", table_name="evaluations")
    op.drop_index("ix_evaluations_model", table_name="evaluations")
    op.drop_table("evaluations")
