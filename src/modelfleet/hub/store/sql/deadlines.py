"""Deadlines on every PostgreSQL round trip, so a partition makes calls fail, never hang.

A black-hole partition (packets vanish; nothing is refused) leaves an established
connection waiting for an answer that does not come: libpq and psycopg's sync API have no
client-side query timeout, and the kernel gives up on a silent peer only after its own
retransmission timeouts (minutes), or never while the far end of a user-space proxy is
alive. Meanwhile the hub's request threads and its leader loops would sit in a statement
until the path heals, and the server, still seeing a healthy session, would keep the
leader's advisory lock from every other replica.

Two halves, each for what the other cannot see:

- **client side** — :class:`~.pgdeadline.DeadlineConnection`: psycopg runs every operation on
  an open connection (execute, fetch, commit, rollback, SQLAlchemy's pre-ping and reset) through
  ``Connection.wait``; ours arms a deadline with one :class:`Watchdog` thread for the
  process and disarms it when the operation returns (a lock and a heap push: microseconds).
  On expiry the watchdog shuts the connection's socket down (``shutdown(SHUT_RDWR)`` on a
  duplicate of its descriptor, so the descriptor itself stays psycopg's to close): the
  blocked thread wakes at once with a broken connection, SQLAlchemy invalidates it, and
  the hub answers 503 ``store_unavailable``. libpq's ``keepalives*`` and
  ``tcp_user_timeout`` options do the same in the kernel for a real partition.
- **server side** — :func:`session_settings`: ``statement_timeout`` below the client
  deadline (the server cancels first, cleanly, while it can still answer),
  ``idle_in_transaction_session_timeout`` (a replica cut off mid-transaction does not keep
  its row locks) and ``tcp_keepalives_*``; the lease connection also gets
  ``idle_session_timeout`` (see :mod:`.leadership`), which is what frees a silent leader's
  lock for a peer. Each is set only where the server knows it, and never over what the
  operator put in the URL's ``options``.

:func:`bounded` narrows the deadline for a block (the leader's ping); ``bounded(None)``
lifts it (migrations, which may legitimately wait for a peer's migration lock).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import make_url

log = logging.getLogger("modelfleet.hub.store")

#: A deadline for the block in :func:`bounded`: seconds, ``math.inf`` for none, or None
#: (the connection's own).
_override: ContextVar[float | None] = ContextVar("modelfleet_db_deadline", default=None)


@dataclass(frozen=True)
class DbDeadlines:
    """The bounds a PostgreSQL store puts on its connections (HubSettings ``db_*``)."""

    #: Longest wait for any one round trip before the connection is cut.
    statement_s: float = 30.0
    #: A session idle inside a transaction this long is ended by the server.
    idle_in_transaction_s: float = 60.0
    #: The lease session's ``idle_session_timeout``: the server frees a silent leader's lock.
    lease_s: float = 60.0
    #: The leader's ping must answer within this, or it steps down.
    lease_ping_s: float = 5.0

    @property
    def server_statement_s(self) -> float:
        """The server's ``statement_timeout``: below the client deadline, so the server
        cancels a slow statement with a clean error while the path still works."""
        return self.statement_s * 0.8


#: The watchdog's granularity: a deadline fires up to this late.
TICK_S = 0.05


class Watchdog:
    """One thread holding the deadlines of operations in flight; cuts the late ones.

    :meth:`arm` registers ``fileno`` (a callable, read only at expiry: the descriptor of
    the socket to cut) for ``seconds``; :meth:`disarm` removes it and says whether the
    deadline fired. Disarmed entries stay in the heap until their time comes (lazy
    deletion), so arming and disarming stay cheap on the statement path; the thread wakes at
    most every :data:`TICK_S`, however many statements run.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, Callable[[], int]] = {}
        self._fired: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self.cuts = 0  # connections cut so far (for tests and logs)

    def arm(self, fileno: Callable[[], int], seconds: float) -> int:
        due = time.monotonic() + seconds
        with self._cond:
            token = next(self._ids)
            self._armed[token] = fileno
            earliest = self._heap[0][0] if self._heap else math.inf
            heapq.heappush(self._heap, (due, token))
            if self._thread is None or not self._thread.is_alive():  # first use, or forked
                self._thread = threading.Thread(
                    target=self._run, name="db-deadline-watchdog", daemon=True
                )
                self._thread.start()
            elif due < earliest:
                self._cond.notify()
        return token

    def disarm(self, token: int) -> bool:
        """Forget ``token``; True if its deadline passed and the socket was cut."""
        with self._cond:
            self._armed.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                return True
            return False

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, token = heapq.heappop(self._heap)
                    fileno = self._armed.pop(token, None)
                    if fileno is not None:
                        # Under the lock: the operation cannot return (disarm) meanwhile,
                        # so its socket is still the one it is waiting on.
                        self._fired.add(token)
                        self._cut(fileno)
                # Disarmed entries stay in the heap: waking for each of them would keep
                # this thread busy under load, so it wakes at most every TICK_S.
                wait = max(self._heap[0][0] - now, TICK_S) if self._heap else None
                self._cond.wait(wait)

    def _cut(self, fileno: Callable[[], int]) -> None:
        try:
            dup = socket.socket(fileno=os.dup(fileno()))
        except Exception as exc:  # closed meanwhile (psycopg raises its own): nothing to wake
            log.debug("deadline passed on a closed connection: %s", exc)
            return
        with dup, contextlib.suppress(OSError):
            dup.shutdown(socket.SHUT_RDWR)
        self.cuts += 1


#: The process's watchdog (one thread, started on first use).
WATCHDOG = Watchdog()


@contextlib.contextmanager
def bounded(seconds: float | None) -> Iterator[None]:
    """Within the block, each round trip on this thread gets ``seconds`` (None: no
    deadline at all) instead of its connection's default."""
    reset = _override.set(math.inf if seconds is None else seconds)
    try:
        yield
    finally:
        _override.reset(reset)


def current_limit(default: float | None) -> float | None:
    """The deadline a round trip on this thread gets now (None: unbounded)."""
    limit = _override.get() or default
    return None if limit is None or limit == math.inf else limit


#: TCP keepalives, on both ends (libpq's ``keepalives_*``, the server's ``tcp_keepalives_*``):
#: idle seconds before the first probe, seconds between probes, probes unanswered.
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 10, 5, 3


def keepalive_args(url_query: dict[str, Any], deadlines: DbDeadlines) -> dict[str, object]:
    """libpq options for a real partition, each only when the URL does not set it: TCP
    keepalives (an idle connection to a vanished server is noticed in ~25 s) and
    ``tcp_user_timeout`` (data unacknowledged this long ends the connection)."""
    wanted: dict[str, object] = {
        "keepalives": 1,
        "keepalives_idle": KEEPALIVE_IDLE_S,
        "keepalives_interval": KEEPALIVE_INTERVAL_S,
        "keepalives_count": KEEPALIVE_COUNT,
        "tcp_user_timeout": int(deadlines.statement_s * 1000),
    }
    return {k: v for k, v in wanted.items() if k not in url_query}


def _ms(seconds: float) -> str:
    return str(max(1, int(seconds * 1000)))


def pool_settings(deadlines: DbDeadlines) -> dict[str, str]:
    """Server settings for every session of the hub."""
    return {
        "statement_timeout": _ms(deadlines.server_statement_s),
        "idle_in_transaction_session_timeout": _ms(deadlines.idle_in_transaction_s),
        "tcp_keepalives_idle": str(KEEPALIVE_IDLE_S),
        "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL_S),
        "tcp_keepalives_count": str(KEEPALIVE_COUNT),
    }


def lease_settings(deadlines: DbDeadlines) -> dict[str, str]:
    """What the lease session adds: a leader silent for ``lease_s`` loses its session."""
    return {"idle_session_timeout": _ms(deadlines.lease_s)}


def operator_options(url: Any) -> str:
    """The ``options`` the operator put in the URL (``-c name=value ...``), or ''."""
    value = make_url(url).query.get("options", "") if url is not None else ""
    return " ".join(value) if isinstance(value, tuple) else str(value)


#: Sets each given setting the server knows, in one round trip; unknown names are skipped
#: (``idle_session_timeout`` is PostgreSQL 14+), so an older server still works.
_APPLY = (
    "SELECT set_config(v.name, v.value, false) FROM unnest(%s::text[], %s::text[])"
    " AS v(name, value) WHERE v.name IN (SELECT name FROM pg_settings)"
)


def settings_statement(
    wanted: dict[str, str], operator: str = ""
) -> tuple[str, tuple[list[str], list[str]]] | None:
    """The driver-level statement (psycopg placeholders) applying ``wanted`` to the
    session, except what the operator's URL ``options`` already set; None if nothing is
    left to set."""
    chosen = {k: v for k, v in wanted.items() if f"{k}=" not in operator}
    if not chosen:
        return None
    return _APPLY, (list(chosen), list(chosen.values()))
