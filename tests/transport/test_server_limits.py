"""A hostile peer cannot make the builtin server hold memory without bound: header floods,
huge request targets, pipelined bodies, a peer that never reads, too many connections.

Raw sockets against a real server on loopback (its own thread and event loop in this
process); the process's peak RSS is reset (``/proc/self/clear_refs``) before each flood
and read after it. Target from issue 16: no flood grows memory more than 64 MiB.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

from tests.transport.conftest import MIB, BuiltinServer
from tests.transport.conftest import read_until_closed as _answer
from tests.transport.conftest import send_all as _send_all

MAX_GROWTH = 64 * MIB


def _peak() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


def _reset_peak() -> int:
    Path("/proc/self/clear_refs").write_text("5")
    return _peak()


def test_200k_headers_answer_431(server: BuiltinServer) -> None:
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


def test_one_huge_header_answers_431(server: BuiltinServer) -> None:
    sock = server.connect()
    _send_all(sock, b"GET / HTTP/1.1\r\nx-big: " + b"v" * (1 * MIB) + b"\r\n\r\n")
    assert _answer(sock).startswith(b"HTTP/1.1 431")


def test_a_50_mib_request_target_answers_414(server: BuiltinServer) -> None:
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


def test_pipelined_bodies_pause_reading_instead_of_piling_up(server: BuiltinServer) -> None:
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


def test_a_peer_that_never_reads_holds_the_server_back(server: BuiltinServer) -> None:
    """Pipelined requests for 1 MiB answers from a peer that reads nothing: once ~1 MiB
    waits in the socket buffer the server stops running that peer's requests."""
    big = BuiltinServer(response_bytes=1 * MIB)
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
    small = BuiltinServer(max_connections=4)
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
