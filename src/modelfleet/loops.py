"""The one background loop and the one retry back-off every hub and site service uses.

Before this module seven services each wrote their own thread, stop event, wait and
``except Exception`` (and four their own jittered back-off, one of them documented as a
different jitter than it computed). The differences between them were accidents, not
choices; what each service really chooses (its interval, its caps, what it logs) is now a
parameter here. A low layer: it imports nothing from the rest of modelfleet, so the hub, the
site and the SDK can all use it.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

log = logging.getLogger("modelfleet.loops")

#: A wait in seconds, fixed or worked out afresh each time (e.g. "until the next window").
Wait = float | Callable[[], float]


class Backoff:
    """Exponential back-off with **equal jitter**.

    After the ``n``-th consecutive failure the ceiling is ``first_s * 2 ** (n - 1)``,
    doubling at most ``max_doublings`` times and never above ``max_s``; :meth:`delay` draws
    uniformly from ``[ceiling / 2, ceiling]``. Equal rather than full jitter (``[0,
    ceiling]``) because a retry here is a request to the hub: half the ceiling is a floor
    that stops a restarted hub's whole fleet from retrying within milliseconds, and the other
    half still spreads the fleet out.

    ``rng`` is injectable so tests draw deterministic delays.
    """

    def __init__(
        self,
        first_s: float = 0.5,
        max_s: float = 60.0,
        *,
        max_doublings: int = 64,
        rng: random.Random | None = None,
    ) -> None:
        if first_s < 0 or max_s < 0:
            raise ValueError("back-off times must not be negative")
        if max_doublings < 0:
            raise ValueError("max_doublings must not be negative")
        self.first_s = first_s
        self.max_s = max_s
        self.max_doublings = max_doublings
        self._rng = rng if rng is not None else random.Random()

    def ceiling(self, failures: int) -> float:
        """The longest wait after ``failures`` consecutive failures (no jitter)."""
        doublings = min(max(0, failures - 1), self.max_doublings)
        return min(self.max_s, self.first_s * 2.0**doublings)

    def delay(self, failures: int) -> float:
        """A wait drawn from ``[ceiling / 2, ceiling]`` (equal jitter)."""
        ceiling = self.ceiling(failures)
        return self._rng.uniform(ceiling / 2, ceiling)


def _seconds(wait: Wait) -> float:
    return wait() if callable(wait) else wait


class BackgroundLoop:
    """Calls ``step`` in a daemon thread until stopped, waiting between calls.

    ``step`` answers the wait before its next call, or None for ``interval_s``. The wait ends
    early on :meth:`stop` and on :meth:`wake` (e.g. "the hub is back: ship the backlog now").
    An exception from ``step`` never ends the thread: it is logged (with ``failure_message``,
    by default "<name> failed", on ``logger``) and the loop waits ``error_wait(failures)``
    (by default ``interval_s``) before the next call; a step that returns resets the count.
    Services whose failures are expected (the hub unreachable) catch those in ``step`` and
    answer their own back-off, so only the unexpected reach this net.

    :meth:`start` and :meth:`stop` are idempotent; a stopped loop can be started again.
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], float | None],
        *,
        interval_s: Wait,
        first_wait_s: Wait | None = None,
        error_wait: Callable[[int], float] | None = None,
        logger: logging.Logger | None = None,
        failure_message: str | None = None,
        join_timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        self._step = step
        self._interval = interval_s
        self._first_wait = first_wait_s
        self._error_wait = error_wait
        self._log = logger if logger is not None else log
        self._failure_message = failure_message or f"{name} failed"
        self._join_timeout_s = join_timeout_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called: a long step checks this to end early."""
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def sleep(self, seconds: float) -> bool:
        """Wait inside a step, ended early only by :meth:`stop`; True if stopping."""
        return self._stop.wait(max(0.0, seconds))

    def wake(self) -> None:
        """End the current wait between steps now."""
        self._wake.set()

    def start(self) -> None:
        with self._guard:
            if self.running:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, *, join: bool = True) -> None:
        """Stop after the current step; with ``join``, wait up to the loop's join timeout for
        it (a step in a long-poll is a daemon and may be left to finish on its own)."""
        with self._guard:
            self._stop.set()
            self._wake.set()
            thread = self._thread
        if join and thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._join_timeout_s)

    def _pause(self, seconds: float) -> None:
        self._wake.wait(max(0.0, seconds))
        self._wake.clear()

    def _run(self) -> None:
        if self._first_wait is not None:
            self._pause(_seconds(self._first_wait))
        failures = 0
        while not self._stop.is_set():
            try:
                wait = self._step()
                failures = 0
            except Exception:  # the loop must outlive any one failure
                failures += 1
                self._log.exception(self._failure_message)
                wait = self._error_wait(failures) if self._error_wait is not None else None
            if self._stop.is_set():
                return
            self._pause(_seconds(self._interval) if wait is None else wait)
