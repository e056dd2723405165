"""Full disks at a site: what each store could not keep, counted, reported and logged once.

A site keeps serving inference when a disk fills up; what it loses is bookkeeping, and the
operator must hear exactly what. Three stores write to disk while the site serves:

- ``spool``: the telemetry outbox (``telemetry.db``). A window that cannot be written is
  dropped (the spool already counts it in the drop counters the hub gets with every batch).
- ``state``: the agent's memory (``state.db``). A write that fails rolls back whole; the
  agent keeps the value in memory and writes it again once space returns.
- ``cache``: the model blobs (``cache/``). A download that cannot be stored fails the
  activation, the current version keeps serving, and the download is retried (resumed).

Each store is either *ok* or in a *full episode*: the first disk-full failure starts one
(one WARNING line), the next successful write ends it (one INFO line with what was lost).
The failures in between are counted, never logged one by one. :class:`StorageHealth` is a
Prometheus collector on the site's ``/metrics`` and its :meth:`~StorageHealth.report` rides
in every report to the hub, so ``modelfleet site show`` / ``status`` say "disk full at
spool: N ...".
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("modelfleet.site.storage")

__all__ = ["CACHE", "SPOOL", "STATE", "StorageHealth", "disk_full"]

SPOOL = "spool"
STATE = "state"
CACHE = "cache"
#: What one lost unit is, per store (the report's and the log's words).
LOST_WHAT = {
    SPOOL: "telemetry windows dropped",
    STATE: "state writes failed",
    CACHE: "model downloads not stored",
}
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk: ``OSError`` ENOSPC/EDQUOT, or
    SQLite's ``SQLITE_FULL`` ("database or disk is full")."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return True
        if isinstance(exc, sqlite3.Error) and (
            getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            or "database or disk is full" in str(exc)
        ):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


@dataclass
class _Store:
    lost_total: int = 0
    episodes: int = 0
    #: Wall-clock start of the current episode; None while the store writes fine.
    full_since: float | None = None
    lost_in_episode: int = 0


class StorageHealth(Collector):
    """Per store: full or not, and what it could not keep (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stores = {name: _Store() for name in LOST_WHAT}

    def full(self, store: str, detail: str, lost: int = 1) -> None:
        """A write to ``store`` failed because its disk is full; ``lost`` units not kept."""
        with self._lock:
            state = self._stores[store]
            state.lost_total += lost
            state.lost_in_episode += lost
            starts = state.full_since is None
            if starts:
                state.full_since = time.time()
                state.episodes += 1
        if starts:
            log.warning(
                "disk full at %s (%s): serving goes on; %s are counted "
                "(modelfleet_site_storage_lost_total) until space returns",
                store,
                detail,
                LOST_WHAT[store],
            )

    def ok(self, store: str) -> None:
        """A write to ``store`` succeeded: ends its full episode, if one is running."""
        state = self._stores[store]
        if state.full_since is None:  # the common case, without the lock
            return
        with self._lock:
            since, lost = state.full_since, state.lost_in_episode
            state.full_since, state.lost_in_episode = None, 0
        if since is not None:
            log.info(
                "space back at %s after %.1fs: writes resumed (%d %s during the episode)",
                store,
                time.time() - since,
                lost,
                LOST_WHAT[store],
            )

    def is_full(self, store: str) -> bool:
        return self._stores[store].full_since is not None

    def report(self) -> dict[str, dict[str, Any]]:
        """For the hub: every store that was ever full since the agent started."""
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for name, state in self._stores.items():
                if state.episodes == 0:
                    continue
                full = state.full_since is not None
                shown = state.lost_in_episode if full else state.lost_total
                what = LOST_WHAT[name]
                out[name] = {
                    "full": full,
                    "full_since": state.full_since,
                    "lost": state.lost_total,
                    "lost_in_episode": state.lost_in_episode,
                    "episodes": state.episodes,
                    "message": (
                        f"disk full at {name}: {shown} {what}"
                        if full
                        else f"disk was full at {name} ({state.episodes}x): {shown} {what}"
                    ),
                }
        return out

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        full = GaugeMetricFamily(
            "modelfleet_site_storage_full",
            "1 while a store's disk is full (its last write failed with ENOSPC)",
            labels=["store"],
        )
        lost = CounterMetricFamily(
            "modelfleet_site_storage_lost",
            "What a store could not keep because its disk was full: telemetry windows "
            "(spool), state writes (state), model downloads (cache)",
            labels=["store"],
        )
        with self._lock:
            for name, state in self._stores.items():
                full.add_metric([name], 1.0 if state.full_since is not None else 0.0)
                lost.add_metric([name], float(state.lost_total))
        yield full
        yield lost
