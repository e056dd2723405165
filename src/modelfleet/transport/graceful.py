"""uvicorn's server, stopping the way a service should: at once, quietly, with exit status 0.

What uvicorn does on SIGTERM: stop accepting, close idle connections, then wait up to
``timeout_graceful_shutdown`` for the requests in flight and *cancel* whatever is left,
logging ``ERROR: Cancel N running task(s), timeout graceful shutdown exceeded``; only then
does the app's lifespan shutdown run. The requests in flight on an idle hub are the sites'
long-polls (desired state, federated tasks), each held up to a minute, so every ordinary
stop ran into that timeout and its ERROR line, and the app learnt of the shutdown too late
to answer them. Afterwards uvicorn re-raises the signal with its default action, so the
process died "killed by SIGTERM" rather than exiting.

:class:`GracefulServer` fixes both at the root: ``before_drain`` runs first, on the event
loop, before uvicorn waits for anything, so the app answers its held requests (the hub
closes its :class:`~modelfleet.hub.wakeups.Notifier`) and the drain finds nothing to
cancel; and a stop by SIGINT or SIGTERM returns normally, as the builtin engine's does
(:mod:`modelfleet.transport.server`), so the command exits 0. The graceful timeout stays as
the safety net for a request that really is stuck.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import uvicorn

__all__ = ["GracefulServer"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _nothing() -> None:
    return None


class GracefulServer(uvicorn.Server):
    """A ``uvicorn.Server`` that calls ``before_drain`` when it starts stopping."""

    def __init__(
        self, config: uvicorn.Config, *, before_drain: Callable[[], None] = _nothing
    ) -> None:
        super().__init__(config)
        self._before_drain = before_drain

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._before_drain()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """As uvicorn's, without re-raising the signal once stopped: a requested stop is
        a normal exit (uvicorn's re-raise made SIGTERM end the process with -15)."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach only the main thread (tests may serve from another)
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
