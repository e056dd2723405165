"""The hand-written HTTP/1.1 client against scripted peers: framing, old peers, stale
keep-alive connections, the response size cap and cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from modelfleet.errors import TransportFailure
from modelfleet.transport.client import Origin, Pool

#: (connection number, request number on it) -> raw response bytes, or None to close the
#: connection without answering. An answer with ``connection: close`` (or HTTP/1.0 without
#: keep-alive) closes it after.
Script = Callable[[int, int], bytes | None]


@dataclass
class Peer:
    """A raw TCP server answering each request with what the script says."""

    script: Script
    connections: int = 0
    requests: list[tuple[int, bytes]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None

    async def start(self) -> Origin:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return Origin.parse(f"http://127.0.0.1:{port}")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        served = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break  # the client closed the connection
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.requests.append((number, head + body))
                answer = self.script(number, served)
                served += 1
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                head_out = answer.split(b"\r\n\r\n", 1)[0].lower()
                old = head_out.startswith(b"http/1.0") and b"keep-alive" not in head_out
                if old or b"connection: close" in head_out:
                    break  # as a server does after such an answer
        finally:
            writer.close()
            self.closed.set()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def run(script: Script, scenario: Callable[[Pool, Origin, Peer], Awaitable[None]]) -> Peer:
    async def main() -> Peer:
        peer = Peer(script)
        origin = await peer.start()
        pool = Pool(max_body_bytes=1000)
        try:
            await scenario(pool, origin, peer)
        finally:
            pool.close()
            peer.close()
        return peer

    return asyncio.run(main())


def ok(body: bytes = b"ok", *, version: bytes = b"HTTP/1.1", extra: bytes = b"") -> bytes:
    return b"%s 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (version, len(body), extra, body)


def test_chunked_body_with_extensions_and_trailers_keeps_the_connection() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-trailer: 1\r\n\r\n"
    )

    async def scenario(pool: Pool, origin: Origin, peer: Peer) -> None:
        first = await pool.request(origin, "GET", "/a")
        assert (first.status, first.body) == (200, b"hello world")
        second = await pool.request(origin, "GET", "/b")
        assert second.body == b"hello world"

    peer = run(lambda conn, n: chunked, scenario)
    assert peer.connections == 1  # reused after a complete chunked body


def test_bad_chunk_framing_is_a_transport_failure() -> None:
    broken = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"

    async def scenario(pool: Pool, origin: Origin, peer: Peer) -> None:
        with pytest.raises(TransportFailure, match="bad chunk size"):
            await pool.request(origin, "GET", "/")

    run(lambda conn, n: broken, scenario)


def test_http_10_peer_closes_after_each_response() -> None:
    """HTTP/1.0 without keep-alive: the response ends the connection, with or without a
    length; with ``Connection: keep-alive`` the connection is reused."""
    answers = {
        1: ok(b"one", version=b"HTTP/1.0"),
        2: b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil close",
        3: ok(b"kept", version=b"HTTP/1.0", extra=b"connection: keep-alive\r\n"),
    }

    async def scenario(pool: Pool, origin: Origin, peer: Peer) -> None:
        assert (await pool.request(origin, "GET", "/")).body == b"one"
        assert (await pool.request(origin, "GET", "/")).body == b"until close"
        assert (await pool.request(origin, "GET", "/")).body == b"kept"
        assert (await pool.request(origin, "GET", "/")).body == b"kept"

    peer = run(lambda conn, n: answers[conn], scenario)
    assert peer.connections == 3  # a new one after each HTTP/1.0 close, then kept alive
    assert [conn for conn, _ in peer.requests] == [1, 2, 3, 3]


def test_a_stale_keep_alive_connection_is_retried_once_on_a_fresh_one() -> None:
    """The server drops a pooled connection as the next request arrives (its idle timeout
    racing the client's write): nothing came back, so the request goes again on a new
    connection and the caller sees only the answer."""

    def script(conn: int, n: int) -> bytes | None:
        if conn == 1 and n == 1:
            return None  # read the second request, close without a byte
        return ok(b"conn %d" % conn)

    async def scenario(pool: Pool, origin: Origin, peer: Peer) -> None:
        assert (await pool.request(origin, "POST", "/infer", b"x")).body == b"conn 1"
        assert (await pool.request(origin, "POST", "/infer", b"y")).body == b"conn 2"

    peer = run(script, scenario)
    assert [conn for conn, _ in peer.requests] == [1, 1, 2]


def test_a_fresh_connection_closed_without_an_answer_fails() -> None:
    async def scenario(pool: Pool, origin: Origin, peer: Peer) -> None:
        with pytest.raises(TransportFailure, match="closed the connection"):
            await pool.request(origin, "GET", "/")

    peer = run(lambda conn, n: None, scenario)
    assert peer.connections == 1  # a fresh connection is not retried


def test_a_connection_closed_mid_response_is_not_retried() -> None:
    async def scenario(pool: Pool, origin: Origin, peer: Peer) -> None:
        with pytest.raises(TransportFailure, match="mid-response"):
            await pool.request(origin, "GET", "/")

    def script(conn: int, n: int) -> bytes | None:
        cut = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nhalf"
        return cut if conn == 1 else ok()

    peer = run(script, scenario)
    assert peer.connections == 1  # part of an answer came back: never sent twice


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 1001\r\n\r\n",  # refused from the header alone
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + (b"100\r\n" + b"x" * 256 + b"\r\n") * 4 + b"0\r\n\r\n",  # 1024 bytes
        b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 1001,
    ],
    ids=["content-length", "chunked", "until-close"],
)  # fmt: skip
def test_response_bodies_over_the_cap_are_refused_and_the_connection_dropped(
    answer: bytes,
) -> None:
    async def scenario(pool: Pool, origin: Origin, peer: Peer) -> None:
        with pytest.raises(TransportFailure, match="exceeds 1000"):
            await pool.request(origin, "GET", "/")
        assert (await pool.request(origin, "GET", "/")).body == b"ok"

    peer = run(lambda conn, n: answer if conn == 1 else ok(), scenario)
    assert peer.connections == 2


def test_a_body_at_the_cap_is_read() -> None:
    async def scenario(pool: Pool, origin: Origin, peer: Peer) -> None:
        assert len((await pool.request(origin, "GET", "/")).body) == 1000

    run(lambda conn, n: ok(b"x" * 1000), scenario)


class SilentPeer(Peer):
    """Reads one request head, never answers, notes when the client leaves."""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.requests.append((self.connections, await reader.readuntil(b"\r\n\r\n")))
        await reader.read()  # returns once the client closes
        writer.close()
        self.closed.set()


def test_cancelling_a_request_closes_its_connection() -> None:
    """How a losing hedge is abandoned: the peer sees its client leave."""

    async def main() -> None:
        peer = SilentPeer(lambda conn, n: None)
        origin = await peer.start()
        pool = Pool()
        try:
            task = asyncio.ensure_future(pool.request(origin, "GET", "/slow"))
            while not peer.requests:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(peer.closed.wait(), 5)
        finally:
            pool.close()
            peer.close()

    asyncio.run(main())


def test_origin_keeps_a_path_prefix_and_refuses_other_schemes() -> None:
    assert Origin.parse("http://h:81/p/").prefix == "/p"
    with pytest.raises(Exception, match="not supported"):
        Origin.parse("ftp://h")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", "chunk"),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
            "chunk",
        ),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"f" * 40 + b"\r\n", "chunk"),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n" + b"x: 1\r\n" * 200,
            "trailer",
        ),
        ("HTTP/1.1 200 OK\r\ncontent-length: ²\r\n\r\nx".encode("latin-1"), "Content-Length"),
        ("HTTP/1.1 2²0 OK\r\ncontent-length: 0\r\n\r\n".encode("latin-1"), "not an HTTP"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n", "Length"),
    ],
)
def test_hostile_framing_is_a_transport_failure(answer: bytes, message: str) -> None:
    """Negative or prefixed chunk sizes, endless trailers, non-ASCII digits: each a clear
    TransportFailure, never a ValueError from deep inside."""

    async def scenario(pool: Pool, origin: Origin, peer: Peer) -> None:
        with pytest.raises(TransportFailure, match=message):
            await pool.request(origin, "GET", "/")

    run(lambda conn, n: answer, scenario)
