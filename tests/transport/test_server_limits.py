"""A hostile peer cannot make the builtin server hold memory without bound: header floods,
huge request targets, pipelined bodies, a peer that never reads, too many connections.

Raw sockets against a real server on loopback (its own thread and event loop in this
process); the process's peak RSS is reset (``/proc/self/clear_refs``) before each flood
and read after it. Target from issue 16: no flood grows memory more than 64 MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelfleet.transport import server as listener

MIB = 1024 * 1024
MAX_GROWTH = 64 * MIB


def _peak() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


def _reset_peak() -> int:
    Path("/proc/self/clear_refs").write_text("5")
    return _peak()


class _Server:
    """The builtin server in a thread; ``gate`` holds every request until set."""

    def __init__(self, *, response_bytes: int = 2, max_connections: int = 1024) -> None:
        self.loop = asyncio.new_event_loop()
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
                    app, "127.0.0.1", 0, max_body_bytes=64 * MIB, max_connections=max_connections
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

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def close(self) -> None:
        self.gate.set()
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def server() -> Iterator[_Server]:
    made = _Server()
    yield made
    made.close()


def _send_all(sock: socket.socket, data: bytes) -> None:
    """Send until done or the server closes/stops reading (an error is fine here)."""
    view = memoryview(data)
    # A reset or a closed socket is how the server refuses a flood: the answer to read.
    with contextlib.suppress(OSError):
        while view:
            sent = sock.send(view[: 1 << 20])
            view = view[sent:]


def _answer(sock: socket.socket) -> bytes:
    chunks = []
    with contextlib.suppress(OSError):  # reset after the answer: keep what arrived
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_200k_headers_answer_431(server: _Server) -> None:
    flood = b"GET / HTTP/1.1\r\n" + b"".join(b"x-h%d: v\r\n" % i for i in range(200_000))
    flood += b"\r\n"
    sock = server.connect()
    idle = _reset_peak()  # after the client built its 2.6 MB: only the server's growth
    _send_all(sock, flood)
    answer = _answer(sock)
    growth = _peak() - idle
    print(f"200k headers: {answer[:40]!r}, peak RSS +{growth / MIB:.1f} MiB")
    assert answer.startswith(b"HTTP/1.1 431")
    assert growth < MAX_GROWTH
    ok = server.connect()
    ok.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _answer(ok).startswith(b"HTTP/1.1 200")


def test_one_huge_header_answers_431(server: _Server) -> None:
    sock = server.connect()
    _send_all(sock, b"GET / HTTP/1.1\r\nx-big: " + b"v" * (1 * MIB) + b"\r\n\r\n")
    assert _answer(sock).startswith(b"HTTP/1.1 431")


def test_a_50_mib_request_target_answers_414(server: _Server) -> None:
    piece = b"a" * MIB  # the client streams one buffer 50 times: its memory stays flat
    sock = server.connect()
    idle = _reset_peak()
    _send_all(sock, b"GET /")
    for _ in range(50):
        _send_all(sock, piece)
    _send_all(sock, b" HTTP/1.1\r\n\r\n")
    answer = _answer(sock)
    growth = _peak() - idle
    print(f"50 MiB URL: {answer[:30]!r}, peak RSS +{growth / MIB:.1f} MiB")
    assert answer.startswith(b"HTTP/1.1 414")
    assert growth < MAX_GROWTH


def test_pipelined_bodies_pause_reading_instead_of_piling_up(server: _Server) -> None:
    """69 pipelined 8 MiB requests while the app holds the first: reading pauses once
    16 MiB wait, so memory stays bounded; all are answered once the app goes on."""
    server.gate.clear()
    body = b"b" * (8 * MIB)
    head = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    sock = server.connect()

    def send() -> None:
        for _ in range(69):
            _send_all(sock, head)
            _send_all(sock, body)

    idle = _reset_peak()
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    sender.join(5)  # blocks once the server stops reading: that is the point
    growth = _peak() - idle
    print(f"69 pipelined 8 MiB requests: peak RSS +{growth / MIB:.1f} MiB")
    assert sender.is_alive(), "the server read everything: nothing paused"
    assert growth < MAX_GROWTH
    server.gate.set()
    sender.join(60)
    sock.shutdown(socket.SHUT_WR)
    answers = _answer(sock)
    assert answers.count(b"HTTP/1.1 200") == 69


def test_a_peer_that_never_reads_holds_the_server_back(server: _Server) -> None:
    """Pipelined requests for 1 MiB answers from a peer that reads nothing: once ~1 MiB
    waits in the socket buffer the server stops running that peer's requests."""
    big = _Server(response_bytes=1 * MIB)
    try:
        sock = big.connect()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        request = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"
        idle = _reset_peak()
        sock.sendall(request * 300)
        deadline = time.monotonic() + 30
        last = -1
        while time.monotonic() < deadline and big.answered != last:
            last = big.answered
            time.sleep(0.5)  # settled: the count stopped moving
        growth = _peak() - idle
        print(f"300 unread 1 MiB answers: {big.answered} ran, peak RSS +{growth / MIB:.1f} MiB")
        assert big.answered < 300
        assert growth < MAX_GROWTH
        sock.close()
    finally:
        big.close()


def test_connections_beyond_the_limit_get_503() -> None:
    small = _Server(max_connections=4)
    try:
        held = [small.connect() for _ in range(4)]
        for sock in held:  # each really counted before the next one tries
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
        extra = small.connect()
        assert _answer(extra).startswith(b"HTTP/1.1 503")
        held.pop().close()
        time.sleep(0.2)  # the close reaches the server
        again = small.connect()
        again.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _answer(again).startswith(b"HTTP/1.1 200")
        for sock in held:
            sock.close()
    finally:
        small.close()
