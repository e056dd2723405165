"""Leader election on the store's database: which hub process runs a background loop
(the rollout controller, the federated coordinator).

On PostgreSQL several hub replicas share one database, and exactly one of them must run
each loop. Leadership is a *session-level* advisory lock (``pg_try_advisory_lock``) held on a
dedicated connection: it belongs to that connection, so when the leader dies — even by
SIGKILL — PostgreSQL ends the session and frees the lock, and the next replica that polls
takes it. Followers poll every ``interval``; a leader checks its connection on every poll and
steps down if the connection is gone (the lock went with it), contending again only from
the next poll on, so that a healthy peer gets the first chance at the lock.

On SQLite the hub is a single process by design: it is always the leader.

A partition (packets vanish) would keep the leader's session alive on the server, and
with it the lock, while the leader cannot reach the database: so the lease session gets
``idle_session_timeout`` (``db_lease_timeout_s``), and the leader steps down *before* the
server may free the lock: its ping has a short deadline (``db_lease_ping_deadline_s``, see
:mod:`.deadlines`), and a leader whose last answered ping is older than the lease minus that
deadline steps down without asking. After the heal it contends again like any follower.

Even so, leadership is an efficiency measure, not the safety net: every transition of a
rollout or a federated round is a compare-and-set, so two loops running for a moment (a
leader on a half-dead connection) cannot apply conflicting decisions. Services get one
from :meth:`Store.leadership <modelfleet.hub.store.base.Store.leadership>`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING

from sqlalchemy import Connection, select, text
from sqlalchemy.exc import SQLAlchemyError

from modelfleet.hub.store.base import Leadership
from modelfleet.hub.store.sql.deadlines import bounded, lease_settings, settings_statement

if TYPE_CHECKING:
    from modelfleet.hub.store.sql.store import SqlStore

log = logging.getLogger("modelfleet.hub.leader")


def _lock_key(role: str, database: str, schema: str) -> int:
    """A signed 64-bit key per role, database and schema: hubs of one fleet share it, and
    fleets kept apart by schema (as the tests are) do not contend."""
    digest = hashlib.sha256(f"modelfleet-{role}:{database}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class SqlLeadership(Leadership):
    """A session-level advisory lock on PostgreSQL; always the leader on SQLite."""

    def __init__(self, store: SqlStore, role: str) -> None:
        self._store = store
        self.role = role
        self._postgres = store.engine.dialect.name == "postgresql"
        self._conn: Connection | None = None
        self._answered = 0.0  # monotonic: when the last answered ping was sent
        self.leader = not self._postgres
        self.since = self._store.now() if self.leader else None

    @property
    def backend(self) -> str:
        return "postgresql-advisory-lock" if self._postgres else "sqlite-single-process"

    def poll(self) -> bool:
        if not self._postgres:
            return True
        deadlines = self._store.deadlines
        if self._conn is not None:
            sent = time.monotonic()
            if sent - self._answered > deadlines.lease_s - deadlines.lease_ping_s:
                # The server may end this silent session (and free the lock) before a ping
                # would answer: no longer act as the leader.
                log.warning("the %s lease went unconfirmed too long; stepping down", self.role)
                self._drop()
                return False
            try:
                with bounded(deadlines.lease_ping_s):
                    self._conn.execute(select(1))
                self._answered = sent
                return True
            except SQLAlchemyError as exc:
                # Step down and sit this poll out: a replica whose session was just ended
                # (pg_terminate_backend, a database restart, a network cut) is the least
                # likely to be healthy, so a peer polling meanwhile takes the lock first.
                log.warning("lost the %s lock with its connection: %s", self.role, exc)
                self._drop()
                return False
        with bounded(deadlines.lease_ping_s):
            return self._try_acquire()

    def _try_acquire(self) -> bool:
        sent = time.monotonic()
        try:
            conn = self._store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as exc:
            log.debug("cannot reach the database for leadership: %s", exc)
            return False
        try:
            row = conn.execute(text("SELECT current_database(), current_schema()")).one()
            key = _lock_key(self.role, str(row[0]), str(row[1]))
            got = bool(conn.execute(select(text(f"pg_try_advisory_lock({key})"))).scalar())
            wanted = lease_settings(self._store.deadlines)
            statement = settings_statement(wanted, self._store.operator_options)
            if got and statement is not None:
                # A leader silent for the lease loses its session, and the lock with it.
                conn.exec_driver_sql(*statement)
        except SQLAlchemyError as exc:
            log.debug("leadership attempt failed: %s", exc)
            conn.invalidate()  # it may hold the lock: never back into the pool
            conn.close()
            return False
        if not got:
            conn.close()
            return False
        self._conn = conn
        self._answered = sent
        self.leader = True
        self.since = self._store.now()
        log.warning("this hub now runs the %s", self.role)
        return True

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self.leader = False
        self.since = None
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except SQLAlchemyError:  # pragma: no cover - already gone
                pass

    def release(self) -> None:
        """Give leadership up (at shutdown): closing the session frees the lock."""
        if self._postgres:
            self._drop()
