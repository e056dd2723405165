"""Waking long-polls when what they wait for changes, and all of them at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class Notifier:
    """Wakes the long-polls a site holds in this process (desired state, federated tasks).

    ``notify`` may be called from any thread (API worker threads, the rollout controller,
    the federated coordinator): off the event loop it hands the wake-up to the loop, since
    asyncio events are not thread-safe. Waiters time out and re-check on their own, which
    covers changes made through another hub replica.

    :meth:`close` is the shutdown: it wakes every waiter and makes every later
    :meth:`wait` return at once, and the long-poll routes answer "unchanged" when they see
    :attr:`closed`. Without it the server's graceful shutdown waits for each held poll to
    run out (up to a minute) and then cancels it with an error; with it, the polls are
    answered and the server stops within its drain's first pass.
    """

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called: a long-poll answers now instead of waiting."""
        return self._closed

    def notify(self, site: str) -> None:
        self._call_on_loop(self._wake, site)

    def notify_many(self, sites: list[str]) -> None:
        for site in sites:
            self.notify(site)

    def close(self) -> None:
        """Answer every long-poll now and every later one at once (the process is stopping)."""
        self._closed = True
        self._call_on_loop(self._wake_all)

    def _call_on_loop(self, wake: Callable[..., None], *args: str) -> None:
        """Run ``wake`` on the waiters' loop (asyncio events are not thread-safe)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(wake, *args)
                return
        wake(*args)

    def _wake(self, site: str) -> None:
        event = self._events.pop(site, None)
        if event is not None:
            event.set()

    def _wake_all(self) -> None:
        events, self._events = self._events, {}
        for event in events.values():
            event.set()

    async def wait(self, site: str, timeout: float) -> bool:
        """Wait for a notification about ``site``: True if one came (or the notifier is
        closed, which returns at once), False on timeout."""
        self._loop = asyncio.get_running_loop()
        if self._closed:
            return True
        event = self._events.setdefault(site, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
            return True
        return False
