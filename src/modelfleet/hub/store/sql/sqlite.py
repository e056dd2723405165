"""The embedded default: one SQLite file, shared safely by threads and processes.

pysqlite normally issues a deferred ``BEGIN`` on its own before the first write. Two
deferred transactions that both read and then write deadlock, and SQLite resolves that by
failing one with "database is locked" straight away, bypassing the busy timeout. So the
driver's transaction handling is switched off and the store emits ``BEGIN IMMEDIATE`` for
writing transactions itself (SQLAlchemy's documented pysqlite recipe): writers then queue
on the busy timeout at BEGIN, and version numbers are allocated one writer at a time.
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from sqlalchemy import URL, Connection, create_engine, event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.pool import ConnectionPoolEntry

from modelfleet.errors import StoreError
from modelfleet.hub.store.schema.models import models
from modelfleet.hub.store.sql.store import WRITE_OPTION, SqlStore

BUSY_TIMEOUT_MS = 30_000

_PRAGMAS = (
    # First, so the journal-mode switch below already waits instead of failing.
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
    # Readers no longer block the writer, nor the writer the readers.
    "PRAGMA journal_mode=WAL",
    # An acknowledged write survives power loss (a revocation, an FL update, an audit row):
    # WAL's NORMAL would lose the last transactions before a checkpoint. The cost, one
    # fsync per commit, is measured on the FL round benchmark in docs/benchmarks.md.
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
)


def _on_connect(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
    # Stop pysqlite from emitting BEGIN (and COMMIT before DDL); _on_begin does it.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        for pragma in _PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _on_begin(conn: Connection) -> None:
    writing = bool(conn.get_execution_options().get(WRITE_OPTION))
    conn.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


class SqliteStore(SqlStore):
    """State in a single SQLite file (WAL mode), created with its directory if absent."""

    def __init__(self, path: str | Path) -> None:
        db_path = Path(path).expanduser().resolve()
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create directory for {db_path}: {exc}") from exc
        engine = create_engine(
            URL.create("sqlite", database=str(db_path)),
            # Connections are cheap; one per request thread (AnyIO runs 40) plus the
            # background loops, kept open: reconnecting costs the PRAGMAs every time.
            pool_size=48,
            max_overflow=16,
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        event.listen(engine, "connect", _on_connect)
        event.listen(engine, "begin", _on_begin)
        super().__init__(engine)
        self.path = db_path
        self._write_turn = threading.RLock()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """Writers of this process take turns here before ``BEGIN IMMEDIATE``.

        SQLite's busy handler polls a held lock with sleeps of 1, 2, 5, 10... ms, so
        a burst of writer threads (every site posting an update at once) spent most of
        its time asleep; a Python lock hands over the moment the previous writer commits.
        Writers in other processes still queue on the busy timeout.
        """
        # Bounded like the busy timeout: a stuck writer gives an error, never a hang.
        if not self._write_turn.acquire(timeout=BUSY_TIMEOUT_MS / 1000):
            raise StoreError(f"database is locked: no write turn within {BUSY_TIMEOUT_MS} ms")
        try:
            with super().write() as conn:
                yield conn
        finally:
            self._write_turn.release()

    def migrate(self, revision: str = "head") -> None:
        """Migrate under an exclusive file lock beside the database.

        SQLite answers "database is locked" at once, without waiting, when several fresh
        connections switch a new file to WAL or upgrade a read lock while another migrates;
        hubs (or threads) starting together therefore take turns here instead.
        """
        lock_path = self.path.with_name(self.path.name + ".migrate.lock")
        try:
            handle = lock_path.open("a")
        except OSError as exc:
            raise StoreError(f"cannot create {lock_path}: {exc}") from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                super().migrate(revision)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def insert_model_if_absent(self, conn: Connection, name: str, now: datetime) -> None:
        stmt = sqlite_insert(models).values(name=name, created_at=now)
        conn.execute(stmt.on_conflict_do_nothing(index_elements=[models.c.name]))
