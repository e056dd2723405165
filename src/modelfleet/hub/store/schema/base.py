"""What every table module shares: the metadata, its naming convention, the UTC type.

The table modules beside this one are what the query code reads; the database itself is
shaped only by the Alembic revisions in ``migrations/versions``. A test compares the two,
so a change there without a matching revision (or the reverse) fails fast.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData
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
