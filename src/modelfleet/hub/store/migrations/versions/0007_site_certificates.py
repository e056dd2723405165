"""Site certificates: the serials the fleet CA issued to each site, for mTLS and revocation.

Revision ID: 0007
Revises: 0006

Written by hand and frozen: it does not import schema modules.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "site_certificates",
        sa.Column("serial", sa.String(40), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("serial", name="pk_site_certificates"),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name="fk_site_certificates_site_id_sites"
        ),
    )
    op.create_index("ix_site_certificates_site_id", "site_certificates", ["site_id"])


def downgrade() -> None:
    op.drop_index("ix_site_certificates_site_id", table_name="site_certificates")
    op.drop_table("site_certificates")
