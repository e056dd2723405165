"""The hub's state store: pick a backend from a URL and have its schema up to date.

Callers depend on :class:`Store` (``base``), the repository interfaces (``repos/``) and the
records (``records/``) only; the SQL implementation is in ``sql/``, the tables in
``schema/`` and the Alembic revisions in ``migrations/``. :func:`open_store` is the one
place that knows which URL means which backend, so the hub's ``--db`` flag is the whole of
the configuration.
"""

from __future__ import annotations

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from modelfleet.errors import InvalidInput
from modelfleet.hub.store.base import Leadership, Store
from modelfleet.hub.store.records import (
    AuditRecord,
    ModelRecord,
    NewVersion,
    TokenRecord,
    VersionRecord,
)
from modelfleet.hub.store.repos import (
    AssignmentRepo,
    AuditRepo,
    DeploymentRepo,
    EventRepo,
    FederationRepo,
    ModelRepo,
    Sealer,
    SiteRepo,
    TelemetryRepo,
    TokenRepo,
)
from modelfleet.hub.store.sql.deadlines import DbDeadlines
from modelfleet.hub.store.sql.store import SqlStore

__all__ = [
    "AssignmentRepo",
    "AuditRecord",
    "AuditRepo",
    "DbDeadlines",
    "DeploymentRepo",
    "EventRepo",
    "FederationRepo",
    "Leadership",
    "ModelRecord",
    "ModelRepo",
    "NewVersion",
    "Sealer",
    "SiteRepo",
    "Store",
    "TelemetryRepo",
    "TokenRecord",
    "TokenRepo",
    "VersionRecord",
    "open_sql_store",
    "open_store",
]

_SUPPORTED = "sqlite:////absolute/path/hub.db or postgresql://user:pass@host:5432/dbname"


def _create(url: str, deadlines: DbDeadlines | None = None) -> SqlStore:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        # The message leaves the URL out: it may hold a password.
        raise InvalidInput(f"not a database URL; expected {_SUPPORTED}") from exc
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        database = parsed.database
        if not database or database == ":memory:" or database.startswith("file:"):
            # An in-memory database would be private to each pooled connection.
            raise InvalidInput(f"SQLite needs a file path; expected {_SUPPORTED}")
        from modelfleet.hub.store.sql.sqlite import SqliteStore

        return SqliteStore(database)
    if parsed.drivername in ("postgresql", "postgresql+psycopg"):
        from modelfleet.hub.store.sql.postgres import PostgresStore

        return PostgresStore(parsed, deadlines)
    raise InvalidInput(
        f"unsupported database URL scheme {parsed.drivername!r}; expected {_SUPPORTED}"
    )


def open_store(url: str, deadlines: DbDeadlines | None = None) -> Store:
    """Open the store at ``url`` and migrate its schema to the latest revision.

    Several processes may call this at once on the same database: migrations are
    serialised (SQLite's write lock, a PostgreSQL advisory lock) and idempotent.
    """
    return open_sql_store(url, deadlines)


def open_sql_store(url: str, deadlines: DbDeadlines | None = None) -> SqlStore:
    """:func:`open_store` typed as the SQL store it returns, for the few callers that
    reach below the interface (the contract suite's migration and locking tests)."""
    store = _create(url, deadlines)
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store
