"""The durable telemetry outbox at a site, and the shipper that empties it into the hub.

Delivery is at-least-once with ids, which gives an exactly-once effect at the hub:

1. A closed window is written to SQLite (``synchronous=FULL``) under its unique id.
2. The shipper *first* records which windows form the next batch under a fresh batch id,
   then sends the batch. A crash anywhere after step 2 (even SIGKILL between the hub's
   acknowledgement and the delete) leaves the same windows under the same batch id, and
   the next shipper resends exactly that batch.
3. Only after the hub acknowledges are the batch's windows deleted; the hub ignores a
   batch id (and a window id) it has already stored.

A batch the hub refuses for what it holds (400, 413, 422) is never resent as it was: a
batch of several windows is split into one batch per window (the hub stored none of
them), and a single window refused again is moved to a dead-letter table with the hub's
reason and counted as dropped, so one bad window cannot stall the outbox forever.

The outbox has a byte cap. When a new window does not fit, the oldest windows that are
not part of an in-flight batch are dropped; the drop is counted (windows and the requests
they held) in the same transaction and the cumulative counters ride along with every
batch, so the hub always knows what was lost. Space is returned to the file system with
SQLite's incremental vacuum after each acknowledged batch.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from modelfleet.crashpoints import crash_point
from modelfleet.errors import HubUnreachable, ModelfleetError, StoreError
from modelfleet.loops import BackgroundLoop, Backoff
from modelfleet.site.storage import SPOOL, StorageHealth, disk_full
from modelfleet.transport.session import HubSession

log = logging.getLogger("modelfleet.site.spool")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS windows ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT NOT NULL UNIQUE,"
    " requests INTEGER NOT NULL,"
    " size INTEGER NOT NULL,"
    " body BLOB NOT NULL,"
    " batch_id TEXT)",
    "CREATE INDEX IF NOT EXISTS ix_windows_batch ON windows(batch_id)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # Windows the hub refused for good (400/413/422 for that window alone): kept for the
    # operator with the hub's reason, the newest MAX_DEAD_LETTERS only.
    "CREATE TABLE IF NOT EXISTS dead_letters ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT NOT NULL,"
    " requests INTEGER NOT NULL,"
    " body BLOB NOT NULL,"
    " reason TEXT NOT NULL,"
    " at REAL NOT NULL)",
)
#: Refused windows kept for inspection; older ones are deleted (they stay counted).
MAX_DEAD_LETTERS = 100
#: Hub answers that refuse a batch for what it holds: resending it can never succeed.
_REFUSED_FOR_GOOD = (400, 413, 422)


@dataclass(frozen=True)
class Batch:
    """Windows on their way to the hub, under an id that survives restarts."""

    id: str
    spool_id: str
    window_ids: tuple[str, ...]
    bodies: tuple[bytes, ...]
    dropped_windows: int
    dropped_requests: int

    def payload(self, sent_at: float | None = None) -> bytes:
        """The JSON body, assembled from the stored bytes without re-encoding them.

        ``sent_at``: the site's clock as the batch leaves; the hub compares it with its own
        to put the windows' times on its clock (a site's clock may be off)."""
        head_doc: dict[str, object] = {
            "batch_id": self.id,
            "spool_id": self.spool_id,
            "dropped": {"windows": self.dropped_windows, "requests": self.dropped_requests},
        }
        if sent_at is not None:
            head_doc["sent_at"] = sent_at
        head = orjson.dumps(head_doc)
        return head[:-1] + b',"windows":[' + b",".join(self.bodies) + b"]}"


@dataclass(frozen=True)
class SpoolStats:
    windows: int
    bytes: int
    in_flight: int
    dropped_windows: int
    dropped_requests: int
    file_bytes: int
    #: Windows the hub refused for good (also counted in ``dropped_windows``).
    dead_letters: int = 0


class Spool:
    """A SQLite outbox of telemetry windows with a byte cap (thread-safe)."""

    def __init__(
        self, path: str | Path, *, max_bytes: int = 64 << 20, health: StorageHealth | None = None
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        # A full disk is counted and logged once per episode there (site/storage.py).
        self.health = health or StorageHealth()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            # Must precede the first table: it decides how pages are freed.
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=10000")
            for statement in _SCHEMA:
                self._db.execute(statement)
            self._db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('spool_id', ?), "
                "('dropped_windows', '0'), ('dropped_requests', '0'), ('dead_letters', '0')",
                (uuid.uuid4().hex,),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the telemetry spool {self.path}: {exc}") from exc
        self.spool_id = self._meta("spool_id")
        # Windows a failed write could not keep (disk full, I/O error): counted here until a
        # write succeeds again and folds them into the stored drop counters, and shipped in
        # the meantime with every batch, so the hub hears of them either way.
        self._lost = (0, 0)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _meta(self, key: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0])

    def put(self, window: dict[str, Any]) -> int:
        """Store a closed window; returns how many windows were dropped to fit it (1 when
        this one could not be written: counted as dropped, never raised at the caller)."""
        body = orjson.dumps(window)
        requests = int(window.get("requests", 0))
        dropped = 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                total = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM windows").fetchone()[0]
                excess = total + len(body) - self.max_bytes
                if len(body) > self.max_bytes:
                    # Larger than the whole outbox: this window is the one that cannot be kept.
                    body = b""
                    dropped = 1
                    self._bump_drops(1, requests)
                elif excess > 0:
                    # In-flight windows stay: the hub may already have counted them.
                    victims: list[tuple[int, int]] = []
                    for seq, size, reqs in self._db.execute(
                        "SELECT seq, size, requests FROM windows WHERE batch_id IS NULL "
                        "ORDER BY seq"
                    ):
                        if excess <= 0:
                            break
                        victims.append((seq, reqs))
                        excess -= size
                    self._db.executemany(
                        "DELETE FROM windows WHERE seq = ?", [(s,) for s, _ in victims]
                    )
                    dropped = len(victims)
                    self._bump_drops(dropped, sum(r for _, r in victims))
                if body:
                    self._db.execute(
                        "INSERT OR IGNORE INTO windows(id, requests, size, body) "
                        "VALUES (?, ?, ?, ?)",
                        (str(window["id"]), requests, len(body), body),
                    )
                lost = self._lost
                if lost != (0, 0):
                    self._bump_drops(*lost)
                self._db.execute("COMMIT")
                self._lost = (0, 0)
            except sqlite3.Error as exc:
                self._rollback()
                self._lost = (self._lost[0] + 1, self._lost[1] + requests)
                if disk_full(exc):
                    self.health.full(SPOOL, str(self.path))
                else:
                    log.warning("telemetry spool write failed (%s): window dropped", exc)
                return 1
        self.health.ok(SPOOL)
        if dropped:
            log.warning("telemetry outbox full: dropped %d oldest window(s)", dropped)
        return dropped

    def _bump_drops(self, windows: int, requests: int) -> None:
        self._db.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'dropped_windows'",
            (windows,),
        )
        self._db.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'dropped_requests'",
            (requests,),
        )

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    def next_batch(self, max_bytes: int = 1024**2) -> Batch | None:
        """The in-flight batch if one exists (resend it as it was), else a new one.

        None when there is nothing to send. A batch always holds at least one window.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute(
                    "SELECT batch_id FROM windows WHERE batch_id IS NOT NULL ORDER BY seq LIMIT 1"
                ).fetchone()
                if row is None:
                    chosen: list[int] = []
                    size = 0
                    for seq, wsize in self._db.execute(
                        "SELECT seq, size FROM windows ORDER BY seq"
                    ):
                        if chosen and size + wsize > max_bytes:
                            break
                        chosen.append(seq)
                        size += wsize
                    if not chosen:
                        self._db.execute("COMMIT")
                        return None
                    batch_id = uuid.uuid4().hex
                    self._db.executemany(
                        "UPDATE windows SET batch_id = ? WHERE seq = ?",
                        [(batch_id, s) for s in chosen],
                    )
                else:
                    batch_id = str(row[0])
                rows = self._db.execute(
                    "SELECT id, body FROM windows WHERE batch_id = ? ORDER BY seq", (batch_id,)
                ).fetchall()
                dropped_windows = int(self._meta("dropped_windows")) + self._lost[0]
                dropped_requests = int(self._meta("dropped_requests")) + self._lost[1]
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"telemetry spool read failed: {exc}") from exc
        return Batch(
            batch_id,
            self.spool_id,
            tuple(str(r[0]) for r in rows),
            tuple(bytes(r[1]) for r in rows),
            dropped_windows,
            dropped_requests,
        )

    def split(self, batch_id: str) -> int:
        """Give each window of ``batch_id`` a batch of its own (the hub refused the batch
        and stored none of it); returns how many batches it became."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                seqs = [
                    int(r[0])
                    for r in self._db.execute(
                        "SELECT seq FROM windows WHERE batch_id = ? ORDER BY seq", (batch_id,)
                    )
                ]
                self._db.executemany(
                    "UPDATE windows SET batch_id = ? WHERE seq = ?",
                    [(uuid.uuid4().hex, seq) for seq in seqs],
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"telemetry spool update failed: {exc}") from exc
        return len(seqs)

    def dead_letter(self, batch_id: str, reason: str, now: float) -> int:
        """Move the windows of a refused batch to the dead letters, counted as dropped."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                rows = self._db.execute(
                    "SELECT id, requests, body FROM windows WHERE batch_id = ?", (batch_id,)
                ).fetchall()
                self._db.executemany(
                    "INSERT INTO dead_letters(id, requests, body, reason, at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(r[0], r[1], r[2], reason[:2000], now) for r in rows],
                )
                self._db.execute("DELETE FROM windows WHERE batch_id = ?", (batch_id,))
                self._bump_drops(len(rows), sum(int(r[1]) for r in rows))
                self._db.execute(
                    "UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'dead_letters'",
                    (len(rows),),
                )
                self._db.execute(
                    "DELETE FROM dead_letters WHERE seq <= (SELECT MAX(seq) FROM dead_letters) - ?",
                    (MAX_DEAD_LETTERS,),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"telemetry spool update failed: {exc}") from exc
        return len(rows)

    def dead_letters(self) -> list[tuple[str, str]]:
        """The refused windows kept, newest first: ``(window id, the hub's reason)``."""
        with self._lock:
            return [
                (str(r[0]), str(r[1]))
                for r in self._db.execute("SELECT id, reason FROM dead_letters ORDER BY seq DESC")
            ]

    def drops(self) -> tuple[int, int]:
        """Cumulative ``(windows, requests)`` dropped since the outbox was created."""
        with self._lock:
            return (
                int(self._meta("dropped_windows")) + self._lost[0],
                int(self._meta("dropped_requests")) + self._lost[1],
            )

    def ack(self, batch_id: str) -> int:
        """The hub stored the batch: delete its windows and reclaim the space."""
        with self._lock:
            try:
                deleted = self._db.execute(
                    "DELETE FROM windows WHERE batch_id = ?", (batch_id,)
                ).rowcount
                # Each step of this pragma frees one page; executescript runs it to the end
                # (a plain execute() stops after the first step).
                self._db.executescript("PRAGMA incremental_vacuum;")
            except sqlite3.Error as exc:
                raise StoreError(f"telemetry spool delete failed: {exc}") from exc
        return int(deleted)

    def stats(self) -> SpoolStats:
        with self._lock:
            count, size, in_flight = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), COUNT(batch_id) FROM windows"
            ).fetchone()
            page_count = self._db.execute("PRAGMA page_count").fetchone()[0]
            page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
            dropped_windows = int(self._meta("dropped_windows"))
            dropped_requests = int(self._meta("dropped_requests"))
            dead = int(self._meta("dead_letters"))
        return SpoolStats(
            count,
            size,
            in_flight,
            dropped_windows,
            dropped_requests,
            page_count * page_size,
            dead,
        )


#: Sends one batch payload; returns when the hub has acknowledged it, raises otherwise.
Send = Callable[[Batch], None]


class HubTelemetrySender:
    """Posts batches to ``/api/v1/sites/{site}/telemetry`` through the agent's hub session."""

    def __init__(self, session: HubSession, site: str, *, timeout: float = 30.0) -> None:
        self.session = session
        self.site = site
        self.timeout = timeout

    def __call__(self, batch: Batch) -> None:
        self.session.request(
            "POST",
            f"/api/v1/sites/{self.site}/telemetry",
            content=batch.payload(sent_at=time.time()),
            headers={"Content-Type": "application/json"},
            timeout=self.timeout,
        )


class Shipper:
    """Empties the spool into the hub in batches, in the background or on demand.

    ``before_delete`` runs between the hub's acknowledgement and the delete; production
    code leaves it unset, tests use it to crash at the worst moment.
    """

    def __init__(
        self,
        spool: Spool,
        send: Send,
        *,
        interval_s: float = 5.0,
        retry_max_s: float = 60.0,
        max_batch_bytes: int = 1024**2,
        before_delete: Callable[[Batch], None] | None = None,
    ) -> None:
        self.spool = spool
        self.send = send
        self.interval_s = interval_s
        self.retry_max_s = retry_max_s
        self.max_batch_bytes = max_batch_bytes
        self.before_delete = before_delete
        self.acked_drops: tuple[int, int] = (-1, -1)
        self.last_error: str | None = None
        # The hub unreachable: equal-jittered; anything else: the bare ceiling, as before.
        self._backoff = Backoff(2 * interval_s, retry_max_s, max_doublings=9)
        self._failures = 0
        self._loop = BackgroundLoop(
            "telemetry-shipper", self._ship, interval_s=interval_s, logger=log
        )

    def ship_once(self) -> int:
        """Send batches until the outbox is empty; returns the windows acknowledged.

        Raises the sender's error (e.g. ``HubUnreachable``) when a batch is not taken.
        """
        shipped = 0
        while not self._loop.stopping:
            batch = self.spool.next_batch(self.max_batch_bytes)
            if batch is None:
                drops = self.spool.drops()
                if drops != self.acked_drops and drops != (0, 0):
                    # Nothing left to carry the counters: tell the hub with an empty batch.
                    empty = Batch(uuid.uuid4().hex, self.spool.spool_id, (), (), *drops)
                    self.send(empty)
                    self.acked_drops = drops
                return shipped
            # The batch is marked in the outbox (its windows carry its id) but not sent: a
            # death here must resend exactly this batch after restart.
            crash_point("site.spool.after_mark")
            try:
                self.send(batch)
            except ModelfleetError as exc:
                if not self._set_aside(batch, exc):
                    raise
                continue
            # The hub stored the batch, the outbox still holds it: a death here resends it
            # under the same id and the hub's dedup keeps it counted once.
            crash_point("site.spool.after_send")
            if self.before_delete is not None:
                self.before_delete(batch)
            self.spool.ack(batch.id)
            self.acked_drops = (batch.dropped_windows, batch.dropped_requests)
            shipped += len(batch.window_ids)
        return shipped

    def _set_aside(self, batch: Batch, exc: ModelfleetError) -> bool:
        """A batch the hub refused for what it holds: split it, or dead-letter its one
        window. False when the refusal is not of that kind (resend later)."""
        if isinstance(exc, HubUnreachable) or exc.status not in _REFUSED_FOR_GOOD:
            return False
        if len(batch.window_ids) > 1:
            self.spool.split(batch.id)
            log.info("telemetry batch refused (%s); resending its windows one by one", exc)
            return True
        if not batch.window_ids:
            return False
        self.spool.dead_letter(batch.id, exc.message, time.time())
        log.warning(
            "telemetry window %s refused by the hub for good (%s); kept in the spool's "
            "dead letters and counted as dropped",
            batch.window_ids[0],
            exc.message,
        )
        return True

    def _ship(self) -> float:
        """One pass of the loop; answers the wait before the next."""
        try:
            self.ship_once()
            self._failures = 0
            self.last_error = None
            wait = self.interval_s
        except ModelfleetError as exc:
            self._failures += 1
            self.last_error = exc.message
            log.debug("telemetry shipping failed: %s", exc.message)
            wait = self._backoff.delay(self._failures)
        except Exception:
            self._failures += 1
            log.exception("telemetry shipper error")
            wait = self._backoff.ceiling(self._failures)
        return max(wait, 0.01)

    def wake(self) -> None:
        """Ship now (e.g. when the hub is reachable again)."""
        self._loop.wake()

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
