"""Waking long-polls when what they wait for changes."""

from __future__ import annotations

import asyncio
import contextlib


class Notifier:
    """Wakes the long-polls a site holds in this process (desired state, federated tasks).

    ``notify`` may be called from any thread (API worker threads, the rollout controller,
    the federated coordinator): off the event loop it hands the wake-up to the loop, since
    asyncio events are not thread-safe. Waiters time out and re-check on their own, which
    covers changes made through another hub replica.
    """

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def notify(self, site: str) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(self._wake, site)
                return
        self._wake(site)

    def notify_many(self, sites: list[str]) -> None:
        for site in sites:
            self.notify(site)

    def _wake(self, site: str) -> None:
        event = self._events.pop(site, None)
        if event is not None:
            event.set()

    async def wait(self, site: str, timeout: float) -> bool:
        """Wait for a notification about ``site``: True if one came, False on timeout."""
        self._loop = asyncio.get_running_loop()
        event = self._events.setdefault(site, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
            return True
        return False
