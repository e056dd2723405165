"""Tables of sites: registration, enrollment, last report, and each site's assignments.

An assignment references the version it names by foreign key, so a version some site is
told to serve can never be deleted from under it.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

from modelfleet.hub.store.schema.base import NAME_LEN, UtcDateTime, metadata

sites = Table(
    "sites",
    metadata,
    Column("id", Integer, autoincrement=True),
    Column("name", String(NAME_LEN), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # The pending or last enrollment token; kept after use so a replay is recognised.
    Column("enrollment_hash", String(128), nullable=True),
    Column("enrollment_expires_at", UtcDateTime, nullable=True),
    Column("enrollment_used_at", UtcDateTime, nullable=True),
    Column("enrolled_at", UtcDateTime, nullable=True),
    Column("last_seen", UtcDateTime, nullable=True),
    Column("report", JSON, nullable=False),
    Column("revision", Integer, nullable=False),
    # Set by a decommission (every assignment removed, the cache wiped at the site),
    # cleared by the next assignment.
    Column("decommissioned_at", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("name"),
    UniqueConstraint("enrollment_hash"),
)

assignments = Table(
    "assignments",
    metadata,
    Column("site_id", Integer, ForeignKey("sites.id"), nullable=False),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("ref", String(2 * NAME_LEN + 1), nullable=False),
    Column("params", JSON, nullable=False),
    Column("assigned_at", UtcDateTime, nullable=False),
    # The highest version assigned while this row lasted (NULL: ``version`` is): a lower
    # ``version`` goes out marked as a rollback in the signed desired state.
    Column("floor", Integer, nullable=True),
    PrimaryKeyConstraint("site_id", "model_id"),
    # A version that some site is told to serve can never be deleted from under it.
    ForeignKeyConstraint(["model_id", "version"], ["versions.model_id", "versions.version"]),
    # Serves sites_with_model and the foreign key check when versions change.
    Index(None, "model_id", "version"),
)

#: Certificates the fleet CA issued to each site (enrollment, renewals). The hub accepts a
#: site's client certificate only while its serial is here, unrevoked: re-enrolling or
#: removing a site revokes every certificate it held, on every replica at once.
site_certificates = Table(
    "site_certificates",
    metadata,
    Column("serial", String(40), nullable=False),
    Column("site_id", Integer, ForeignKey("sites.id"), nullable=False),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("not_after", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("serial"),
    Index(None, "site_id"),
)
