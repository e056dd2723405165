"""The agent's durable memory: what it needs to restart and keep serving with the hub gone.

One SQLite file holds the credentials from enrollment, the last desired state the hub
sent, and the last version of each model that was verified and loaded. It is readable
only by its owner because it holds the site's token. Each write is one transaction, so a
crash leaves either the old value or the new one; ``synchronous=FULL`` because writes are
rare and losing the credentials after a power cut would need a new enrollment token.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelfleet.errors import InsufficientStorage, InvalidInput, StoreError
from modelfleet.site.storage import STATE, StorageHealth, disk_full

__all__ = ["Credentials", "GoodModel", "SiteState"]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS credentials (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        hub_url TEXT NOT NULL, site TEXT NOT NULL, token TEXT NOT NULL, public_key TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS desired (
        id INTEGER PRIMARY KEY CHECK (id = 1), etag TEXT NOT NULL, doc TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS good_models (
        name TEXT PRIMARY KEY, version INTEGER NOT NULL, digest TEXT NOT NULL,
        manifest TEXT NOT NULL, signature TEXT NOT NULL, params TEXT NOT NULL,
        recorded_at TEXT NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


@dataclass(frozen=True)
class Credentials:
    """What enrollment produced; the token is kept out of ``repr`` so logs never show it."""

    hub_url: str
    site: str
    token: str = field(repr=False)
    public_key: str


@dataclass(frozen=True)
class GoodModel:
    """A version this site verified and loaded, with what it needs to reload it offline."""

    name: str
    version: int
    digest: str
    manifest: str
    signature: str
    params: dict[str, Any]
    recorded_at: str


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} is not JSON-serialisable: {exc}") from exc


def _from_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StoreError(f"stored {what} is not valid JSON: {exc}") from exc


def _private_file(path: Path) -> None:
    """Create the directory (0700) and database file (0600) before SQLite opens it.

    SQLite gives its -wal and -shm files the database file's mode, so they are private too.
    An existing directory keeps its mode: it may be one the operator chose and shares.
    """
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True)
        parent.chmod(0o700)  # mkdir's mode is filtered by the umask
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    path.chmod(0o600)


class SiteState:
    """One SQLite file (WAL) shared by the agent's threads through one locked connection.

    The lock serialises this process's threads; SQLite's busy timeout handles another
    process (the CLI reading the state, say).
    """

    def __init__(self, path: Path, health: StorageHealth | None = None) -> None:
        self.path = path
        # A write that fails on a full disk is counted there, logged once per episode.
        self.health = health or StorageHealth()
        self._lock = threading.Lock()
        try:
            _private_file(path)
            conn = sqlite3.connect(
                path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE below
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open site state {path}: {exc}") from exc
        self._conn = conn
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            with self._transaction() as tx:
                (found,) = tx.execute("PRAGMA user_version").fetchone()
                if found > SCHEMA_VERSION:
                    raise StoreError(
                        f"site state {path} has schema {found}; this agent knows up to "
                        f"{SCHEMA_VERSION} (was it written by a newer modelfleet?)"
                    )
                for statement in _SCHEMA:
                    tx.execute(statement)
                tx.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open site state {path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise

    # -- plumbing -----------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT``; any exception inside rolls it back."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"site state {self.path}: {exc}") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                # The original error matters more; SQLite may have rolled back already.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error) and disk_full(exc):
                    # Rolled back whole: the old value stays; the caller keeps the new one
                    # in memory and writes it again once space returns.
                    self.health.full(STATE, str(self.path))
                    raise InsufficientStorage(
                        f"disk full at the site state {self.path}: write not kept"
                    ) from exc
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"site state {self.path}: {exc}") from exc
                raise
            self.health.ok(STATE)

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"site state {self.path}: {exc}") from exc

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        with self._transaction() as tx:
            tx.execute(sql, params)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SiteState:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- credentials --------------------------------------------------------------------

    def save_credentials(self, credentials: Credentials) -> None:
        self._write(
            "INSERT OR REPLACE INTO credentials (id, hub_url, site, token, public_key) "
            "VALUES (1, ?, ?, ?, ?)",
            (credentials.hub_url, credentials.site, credentials.token, credentials.public_key),
        )

    def load_credentials(self) -> Credentials | None:
        rows = self._query("SELECT hub_url, site, token, public_key FROM credentials")
        return Credentials(*rows[0]) if rows else None

    # -- desired state ------------------------------------------------------------------

    def save_desired(self, etag: str, doc: dict[str, Any]) -> None:
        """Keep the hub's last answer so a restart without the hub knows what to serve."""
        self._write(
            "INSERT OR REPLACE INTO desired (id, etag, doc) VALUES (1, ?, ?)",
            (etag, _to_json(doc, "desired state")),
        )

    def load_desired(self) -> tuple[str, dict[str, Any]] | None:
        rows = self._query("SELECT etag, doc FROM desired")
        if not rows:
            return None
        etag, text = rows[0]
        doc = _from_json(text, "desired state")
        if not isinstance(doc, dict):
            raise StoreError("stored desired state is not a JSON object")
        return etag, doc

    # -- last good versions -------------------------------------------------------------

    def record_good(
        self,
        name: str,
        version: int,
        digest: str,
        manifest: str,
        signature: str,
        params: dict[str, Any],
    ) -> None:
        """Remember a version after it verified, loaded and warmed up, and only then.

        The manifest and signature are kept verbatim so a restart can verify the cached
        blob again against the pinned key without asking the hub.
        """
        recorded_at = datetime.now(UTC).isoformat()
        self._write(
            "INSERT OR REPLACE INTO good_models "
            "(name, version, digest, manifest, signature, params, recorded_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, version, digest, manifest, signature, _to_json(params, "params"), recorded_at),
        )

    def last_good(self) -> dict[str, GoodModel]:
        rows = self._query(
            "SELECT name, version, digest, manifest, signature, params, recorded_at "
            "FROM good_models ORDER BY name"
        )
        return {
            row[0]: GoodModel(
                name=row[0],
                version=row[1],
                digest=row[2],
                manifest=row[3],
                signature=row[4],
                params=_from_json(row[5], f"params of {row[0]}"),
                recorded_at=row[6],
            )
            for row in rows
        }

    def forget(self, name: str) -> None:
        self._write("DELETE FROM good_models WHERE name = ?", (name,))

    # -- odds and ends ------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM kv WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set(self, key: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))
