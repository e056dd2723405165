"""The builtin HTTP server in a thread of the test process, for raw-socket tests.

Shared by the flood tests (``test_server_limits.py``) and the listener fuzz
(``test_listener_fuzz.py``): a real server on loopback, its own event loop, and a
socket helper that reads what the server sends until it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from modelfleet.transport import server as listener

MIB = 1024 * 1024


class BuiltinServer:
    """The builtin server in a thread; ``gate`` holds every request until set.

    The app answers 200 with ``response_bytes`` bytes to anything the server hands it,
    so every other status a client sees comes from the server itself.
    """

    def __init__(
        self,
        *,
        response_bytes: int = 2,
        max_connections: int = 1024,
        timeouts: tuple[float, float] = (listener.REQUEST_TIMEOUT_S, listener.IDLE_TIMEOUT_S),
        loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
    ) -> None:
        self.loop = loop_factory()
        self.gate = threading.Event()
        self.gate.set()
        self.answered = 0
        body = b"x" * response_bytes

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            while not self.gate.is_set():
                await asyncio.sleep(0.01)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            self.answered += 1

        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(
                listener.start_builtin(
                    app,
                    "127.0.0.1",
                    0,
                    max_body_bytes=64 * MIB,
                    max_connections=max_connections,
                    timeouts=timeouts,
                )
            )
            self.port = self.server.sockets[0].getsockname()[1]
            started.set()
            self.loop.run_forever()
            # Let the connections' tasks end before the loop goes away.
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        started.wait(10)

    def connect(self, timeout: float = 10) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def close(self) -> None:
        self.gate.set()
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def server() -> Iterator[BuiltinServer]:
    made = BuiltinServer()
    yield made
    made.close()


def send_all(sock: socket.socket, data: bytes) -> None:
    """Send until done or the server closes/stops reading (an error is fine here)."""
    view = memoryview(data)
    # A reset or a closed socket is how the server refuses a flood: the answer to read.
    with contextlib.suppress(OSError):
        while view:
            sent = sock.send(view[: 1 << 20])
            view = view[sent:]


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or the socket's timeout passes)."""
    chunks = []
    with contextlib.suppress(OSError):  # reset after the answer: keep what arrived
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)
