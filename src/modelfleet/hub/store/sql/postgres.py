"""The scale-out backend: PostgreSQL through psycopg 3, shared by several hub replicas.

Concurrency rests on row locks rather than a database-wide lock: version numbers are
allocated under ``SELECT ... FOR UPDATE`` on the model row, so pushes to different models
proceed in parallel, and schema migrations are serialised by a transaction-scoped
advisory lock so replicas starting together do not race to create tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import URL, Connection, create_engine, event, func, make_url, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import ArgumentError

from modelfleet.errors import InvalidInput, StoreError
from modelfleet.hub.store.schema.models import models
from modelfleet.hub.store.sql.deadlines import (
    DbDeadlines,
    keepalive_args,
    operator_options,
    pool_settings,
    settings_statement,
)
from modelfleet.hub.store.sql.store import SqlStore

#: Arbitrary but fixed: every modelfleet hub on a database contends for the same key.
MIGRATION_LOCK_KEY = 0x6D66_6D69_6772  # "mfmigr"

_DRIVER = "postgresql+psycopg"


def psycopg_url(url: str | URL) -> URL:
    """``url`` with the psycopg 3 driver, whatever PostgreSQL spelling it came in."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidInput(f"not a database URL: {exc}") from exc
    if parsed.drivername not in ("postgresql", _DRIVER):
        raise InvalidInput(
            f"unsupported PostgreSQL driver {parsed.drivername!r}; use postgresql:// "
            "(modelfleet talks to PostgreSQL through psycopg 3)"
        )
    return parsed.set(drivername=_DRIVER)


class PostgresStore(SqlStore):
    """State in PostgreSQL; the URL may carry libpq options such as ``sslmode``.

    Every connection is bounded (hub/store/sql/deadlines.py): each round trip has a
    client-side deadline, the server ends sessions that go silent, TCP keepalives and
    ``tcp_user_timeout`` catch a partition in the kernel; a URL's own options win."""

    def __init__(self, url: str | URL, deadlines: DbDeadlines | None = None) -> None:
        parsed = psycopg_url(url)
        self.deadlines = deadlines or DbDeadlines()
        self.operator_options = operator_options(parsed)
        connect_args: dict[str, object] = keepalive_args(dict(parsed.query), self.deadlines)
        # Defaults only: whatever the operator put in the URL query wins.
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = 10
        if "application_name" not in parsed.query:
            connect_args["application_name"] = "modelfleet-hub"
        try:
            engine = create_engine(
                parsed,
                pool_size=10,
                max_overflow=20,
                pool_timeout=30,
                # Replicas outlive database restarts and idle-connection reapers.
                pool_pre_ping=True,
                pool_recycle=1800,
                connect_args=connect_args,
            )
        except ModuleNotFoundError as exc:
            raise StoreError(
                "PostgreSQL support needs psycopg 3: pip install 'modelfleet[postgres]'"
            ) from exc
        self._bound(engine)
        super().__init__(engine)

    def _bound(self, engine: Any) -> None:
        """Connections are :class:`DeadlineConnection` s with the server-side settings."""
        from modelfleet.hub.store.sql.pgdeadline import DeadlineConnection

        deadline_s = self.deadlines.statement_s
        statement = settings_statement(pool_settings(self.deadlines), self.operator_options)

        @event.listens_for(engine, "do_connect")
        def connect(_dialect: Any, _rec: Any, cargs: Any, cparams: Any) -> Any:
            conn = DeadlineConnection.connect(*cargs, **cparams)
            conn.deadline_s = deadline_s
            return conn

        @event.listens_for(engine, "connect")
        def configure(dbapi_conn: Any, _rec: Any) -> None:
            if statement is not None:
                with dbapi_conn.cursor() as cur:
                    cur.execute(*statement)
                dbapi_conn.commit()

    def lock_migrations(self, conn: Connection) -> None:
        # A migration may wait for a peer's and rewrite big tables: no statement timeout
        # for this transaction (the client-side deadline is lifted by migrate()).
        conn.execute(select(func.set_config("statement_timeout", "0", True)))
        conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))

    def insert_model_if_absent(self, conn: Connection, name: str, now: datetime) -> None:
        # A concurrent inserter blocks here until the other transaction ends, then
        # either sees the committed row (no-op) or, after a rollback, inserts it.
        stmt = pg_insert(models).values(name=name, created_at=now)
        conn.execute(stmt.on_conflict_do_nothing(index_elements=[models.c.name]))
