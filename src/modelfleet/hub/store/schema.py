"""The hub's tables as SQLAlchemy Core objects.

This module is what the query code reads; the database itself is shaped only by the
Alembic revisions in ``migrations/versions``. A test compares the two, so a change here
without a matching revision (or the reverse) fails fast.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

#: Deterministic constraint names, so later revisions can drop or alter them by name on
#: every backend (SQLite batch mode needs names to find constraints).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC on the Python side.

    PostgreSQL keeps the instant in ``timestamptz`` but hands it back in the session's
    time zone; SQLite has no time zone at all and returns naive values. Normalising here
    means records compare equal whichever backend produced them.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} cannot be stored; use UTC")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # SQLite's text format has no offset; the stored value is implicitly UTC.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# Names are bounded so PostgreSQL rejects absurd input instead of storing it; free text
# (descriptions, audit details, manifests) is unbounded.
NAME_LEN = 255

models = Table(
    "models",
    metadata,
    Column("id", Integer, autoincrement=True),
    Column("name", String(NAME_LEN), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("name"),
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, autoincrement=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("io", JSON, nullable=False),
    Column("opset", Integer, nullable=False),
    Column("framework", String(NAME_LEN), nullable=True),
    Column("description", Text, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("training_regions", JSON, nullable=False),
    Column("parent_version", Integer, nullable=True),
    Column("pushed_by", String(NAME_LEN), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("manifest", Text, nullable=False),
    Column("signature", Text, nullable=False),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("model_id", "version"),
    Index(None, "digest"),
)

aliases = Table(
    "aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("alias", String(NAME_LEN), nullable=False),
    Column("version", Integer, nullable=False),
    PrimaryKeyConstraint("model_id", "alias"),
    # An alias can only ever point at a version that exists.
    ForeignKeyConstraint(["model_id", "version"], ["versions.model_id", "versions.version"]),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", String(32)),
    Column("name", String(NAME_LEN), nullable=False),
    Column("role", String(32), nullable=False),
    Column("token_hash", String(128), nullable=False),
    Column("site", String(NAME_LEN), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("revoked_at", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("token_hash"),
)

audit = Table(
    "audit",
    metadata,
    # SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(NAME_LEN), nullable=False),
    Column("action", String(NAME_LEN), nullable=False),
    Column("object", Text, nullable=False),
    Column("outcome", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    PrimaryKeyConstraint("id"),
    Index(None, "at"),
)

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
    PrimaryKeyConstraint("site_id", "model_id"),
    # A version that some site is told to serve can never be deleted from under it.
    ForeignKeyConstraint(["model_id", "version"], ["versions.model_id", "versions.version"]),
    # Serves sites_with_model and the foreign key check when versions change.
    Index(None, "model_id", "version"),
)

# Feature tables register themselves on ``metadata`` when imported; importing them here
# keeps "schema.py describes the whole database" true for the migration consistency test.
from modelfleet.hub.store import (  # noqa: E402
    schema_deployments,  # noqa: F401
    schema_federation,  # noqa: F401
    schema_telemetry,  # noqa: F401
)
