"""Failed authentication, limited per client address.

Whoever reaches the hub may guess tokens or send enrollment attempts. Each failure costs
the hub a database lookup, and each failed enrollment an audit row, so a loop of anonymous
requests could keep a thread busy and grow the audit log without bound. The limiter counts
failures (unknown or expired token, refused enrollment) per client address in a fixed
window; past :attr:`FailureLimiter.limit` failures an address is answered ``429`` for the
rest of that window *before* any lookup, and only the first :attr:`audit_per_window`
failures of an address per window are written to the audit log (the rest are counted in
the hub's metrics).

Known tokens never count, and a token that authenticated from this process in the last
:data:`VOUCHED_S` still gets in from an address over its limit: a busy site or an operator
behind the same NAT as a guessing loop keeps working. The address is the
TCP peer's: behind a reverse proxy every client shares the proxy's address, so put the
limit in the proxy there (documented in docs/security.md). State is per hub process and
bounded: at most :data:`MAX_ADDRESSES` addresses are tracked; when full, the table is
reset (the limit then restarts for everyone, never blocks a stranger).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from modelfleet.errors import RateLimited

__all__ = ["MAX_ADDRESSES", "FailureLimiter"]

MAX_ADDRESSES = 10_000
#: How long a credential that authenticated stays welcome from a limited address.
VOUCHED_S = 900.0


@dataclass
class _Window:
    started: float
    failures: int = 0


class FailureLimiter:
    """Counts authentication failures per address (thread-safe: API worker threads)."""

    def __init__(
        self,
        *,
        limit: int,
        audit_per_window: int,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.audit_per_window = audit_per_window
        self.window_s = window_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()
        self._vouched: dict[str, float] = {}  # digest of a good Authorization -> until
        self.refused = 0  # requests answered 429
        self.unaudited = 0  # failures counted but not written to the audit log

    def _current(self, address: str, now: float) -> _Window:
        window = self._windows.get(address)
        if window is None or now - window.started >= self.window_s:
            if window is None and len(self._windows) >= MAX_ADDRESSES:
                self._windows.clear()
            window = self._windows[address] = _Window(now)
        return window

    def vouch(self, authorization: str | None) -> None:
        """This credential just authenticated: let it in even from a limited address."""
        if not authorization:
            return
        with self._lock:
            if len(self._vouched) >= MAX_ADDRESSES:
                self._vouched.clear()
            self._vouched[_digest(authorization)] = self._clock() + VOUCHED_S

    def check(self, address: str | None, authorization: str | None = None) -> None:
        """Refuse (429) an address over its limit, before any lookup is spent on it, unless
        ``authorization`` is a credential vouched for."""
        if address is None:
            return
        with self._lock:
            if authorization:
                until = self._vouched.get(_digest(authorization))
                if until is not None and until > self._clock():
                    return
            window = self._windows.get(address)
            if window is None or self._clock() - window.started >= self.window_s:
                return
            if window.failures < self.limit:
                return
            self.refused += 1
            retry = max(1, round(self.window_s - (self._clock() - window.started)))
        raise RateLimited(
            f"too many failed authentications from {address}; retry in {retry} s",
            retry_after_s=retry,
        )

    def failed(self, address: str | None) -> bool:
        """Count one failure; True when it should still be written to the audit log."""
        if address is None:
            return True
        with self._lock:
            window = self._current(address, self._clock())
            window.failures += 1
            if window.failures <= self.audit_per_window:
                return True
            self.unaudited += 1
            return False


def _digest(authorization: str) -> str:
    return hashlib.sha256(authorization.encode("utf-8", "replace")).hexdigest()
