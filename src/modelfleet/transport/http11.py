"""HTTP/1.1 on one connection, for the builtin engine (:mod:`~modelfleet.transport.server`):
httptools parses, requests run one at a time in arrival order, every answer leaves in one
write, and every limit a hostile peer could push on is bounded here (headers, target,
queued bodies, connections, slow readers and trickling writers).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, cast
from urllib.parse import unquote

from modelfleet.pki.tls import tls_extensions
from modelfleet.transport.asgi import ASGIApp, Message
from modelfleet.transport.responses import chunk as chunk_frame
from modelfleet.transport.responses import head as frame_head
from modelfleet.transport.responses import simple

log = logging.getLogger("modelfleet.transport.server")

#: Request bodies larger than this are refused with 413 before they are buffered.
MAX_BODY_BYTES = 64 * 1024 * 1024
_MAX_QUEUED = 64  # pipelined requests per connection before reading pauses
#: What one connection may make the server hold (a peer's bytes are hostile until parsed):
#: header lines per request and their total size (431 beyond), the request target (414),
#: and the bodies of pipelined requests waiting their turn (reading pauses beyond).
MAX_HEADERS = 100
MAX_HEADER_BYTES = 16 * 1024
MAX_URL_BYTES = 8 * 1024
MAX_QUEUED_BYTES = 16 * 1024 * 1024
#: Connections served at once; one more is answered 503 and closed.
MAX_CONNECTIONS = 1024
#: The server stops running a connection's requests while the peer does not read what was
#: written (more than this waiting in the socket buffer), so a slow reader cannot make the
#: server buffer answers without bound.
WRITE_HIGH_WATER = 1024 * 1024
#: A connection with no request in flight is closed after this long (keep-alive idle).
IDLE_TIMEOUT_S = 75.0
#: A request must arrive whole (headers and body) within this long, or it gets 408 and the
#: connection closes: a client trickling bytes cannot hold a connection forever.
REQUEST_TIMEOUT_S = 30.0
_ASGI = {"version": "3.0", "spec_version": "2.3"}


class Connections:
    """The open connections of one server (the event loop's thread only), and the limits
    they share."""

    def __init__(
        self,
        limit: int = MAX_CONNECTIONS,
        timeouts: tuple[float, float] = (REQUEST_TIMEOUT_S, IDLE_TIMEOUT_S),
    ) -> None:
        self.open = 0
        self.limit = limit
        self.request_timeout_s, self.idle_timeout_s = timeouts
        self.live: set[HttpProtocol] = set()
        self.stopping = False

    def shutdown(self) -> None:
        """The server stops: idle connections close now, busy ones after their current
        answer. Without it the server's ``wait_closed`` waits for every client that keeps
        a connection in its pool (a gateway, an SDK client) until the idle timeout."""
        self.stopping = True
        for connection in list(self.live):
            connection.shutdown()


class HttpProtocol(asyncio.Protocol):
    """One connection: httptools parses, requests run one at a time in arrival order."""

    def __init__(
        self,
        app: ASGIApp,
        loop: asyncio.AbstractEventLoop,
        max_body_bytes: int,
        server: tuple[str, int],
        connections: Connections,
    ) -> None:
        import httptools

        self._connections = connections
        self._counted = False
        self._header_bytes = 0
        self._queued_bytes = 0
        self._writable = asyncio.Event()
        self._writable.set()
        self._app = app
        self._loop = loop
        self._max_body = max_body_bytes
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._parse_url = httptools.parse_url
        self._parser_error: type[Exception] = httptools.HttpParserError
        self._transport: asyncio.Transport | None = None
        self._client: tuple[str, int] | None = None
        self._extensions: dict[str, Any] = {}
        self._scheme = "http"
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._too_large = False
        self._queue: deque[tuple[dict[str, Any], bytes, bool]] = deque()
        self._running = False
        self._closed = False
        self._refusal: bytes | None = None  # waiting for the requests before it (_fail)
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None

    def _arm(self, delay: float | None, on_expiry: Any = None) -> None:
        """One timer per connection: idle between requests, or the current request's."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if delay is not None and not self._closed:
            self._timer = self._loop.call_later(delay, on_expiry)

    def _idle_expired(self) -> None:
        if self._transport is not None and not self._running and not self._closed:
            self._closed = True
            self._transport.close()

    def _request_expired(self) -> None:
        self._fail(408, b'{"error":"request not received in time"}')

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        if self._connections.open >= self._connections.limit:
            self._fail(503, b'{"error":"too many connections"}')
            return
        self._connections.open += 1
        self._connections.live.add(self)
        self._counted = True
        self._transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        self._client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        # An SSL transport reaches the protocol only once its handshake is done, so the
        # client certificate (if any) is known and verified here.
        self._extensions = tls_extensions(transport.get_extra_info("ssl_object"))
        self._scheme = "https" if self._extensions else "http"
        self._arm(self._connections.idle_timeout_s, self._idle_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm(None)
        self._closed = True
        self._queue.clear()
        self._writable.set()  # a request waiting to write gives up (the peer left)
        if self._counted:
            self._counted = False
            self._connections.open -= 1
            self._connections.live.discard(self)

    def shutdown(self) -> None:
        """Close now if no request is running, else once the running ones are answered
        (:meth:`_drain` looks at ``stopping``). An idle connection is aborted: nothing is
        left to write, and closing a TLS connection would wait for the peer's close_notify,
        which a pooled client sends only when it next looks at the connection."""
        transport = self._transport
        if transport is None or self._closed or self._running:
            return
        self._closed = True
        self._arm(None)
        if transport.get_write_buffer_size() == 0:
            transport.abort()
        else:
            transport.close()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def data_received(self, data: bytes) -> None:
        if self._closed or self._refusal is not None:
            return
        try:
            self._parser.feed_data(data)
        except _Refused:
            return  # answered and closed already
        except self._parser_error as exc:
            if isinstance(exc.__cause__ or exc.__context__, _Refused):
                return
            self._fail(400, b'{"error":"malformed HTTP request"}')
        except Exception:  # httptools' upgrade signal and anything else: refuse and close
            self._fail(400, b'{"error":"unsupported HTTP request"}')

    # --- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._arm(self._connections.request_timeout_s, self._request_expired)
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._body = []
        self._size = 0
        self._too_large = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URL_BYTES:
            self._refuse(414, b'{"error":"request target longer than %d bytes"}' % MAX_URL_BYTES)

    def on_header(self, name: bytes, value: bytes) -> None:
        # httptools may deliver one header in pieces: count bytes, not calls, for the size.
        self._header_bytes += len(name) + len(value)
        if len(self._headers) >= MAX_HEADERS or self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(
                431,
                b'{"error":"more than %d header fields or %d bytes of headers"}'
                % (MAX_HEADERS, MAX_HEADER_BYTES),
            )
            return
        self._headers.append((name.lower(), value))

    def _refuse(self, status: int, body: bytes) -> None:
        """Refuse the request being parsed and stop parsing this connection."""
        self._fail(status, body)
        raise _Refused

    def on_headers_complete(self) -> None:
        for name, value in self._headers:
            if name == b"content-length" and value.isdigit() and int(value) > self._max_body:
                self._too_large = True
            elif (
                name == b"expect"
                and value.lower() == b"100-continue"
                and not self._too_large
                and self._transport is not None
            ):
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._too_large:
            return
        self._size += len(body)
        if self._size > self._max_body:
            self._too_large = True
            self._body = []
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._arm(None)
        keep_alive = bool(self._parser.should_keep_alive())
        if self._too_large:
            self._fail(413, b'{"error":"request body too large"}')
            return
        parsed = self._parse_url(self._url)
        raw_path: bytes = parsed.path
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        method = self._parser.get_method().decode("ascii", "replace")
        version = self._parser.get_http_version()
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": version,
            "method": method,
            "scheme": self._scheme,
            "path": path,
            "raw_path": raw_path,
            "query_string": parsed.query or b"",
            "root_path": "",
            "headers": self._headers,
            "client": self._client,
            "server": self._server,
            "extensions": self._extensions,
        }
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._queue.append((scope, body, keep_alive))
        self._queued_bytes += len(body)
        if (
            (len(self._queue) > _MAX_QUEUED or self._queued_bytes > MAX_QUEUED_BYTES)
            and self._transport is not None
            and not self._paused
        ):
            self._paused = True
            self._transport.pause_reading()
        if not self._running:
            self._running = True
            self._loop.create_task(self._drain())

    # --- running requests -----------------------------------------------------------------

    async def _drain(self) -> None:
        try:
            while self._queue and not self._closed:
                scope, body, keep_alive = self._queue.popleft()
                self._queued_bytes -= len(body)
                if (
                    self._paused
                    and self._refusal is None
                    and len(self._queue) < _MAX_QUEUED // 2
                    and self._queued_bytes <= MAX_QUEUED_BYTES // 2
                ):
                    self._paused = False
                    if self._transport is not None:
                        self._transport.resume_reading()
                await self._run(scope, body, keep_alive)
        finally:
            self._running = False
            if self._refusal is not None:
                self._close_with(self._refusal)
            if self._connections.stopping:
                self.shutdown()
            if not self._closed and self._timer is None:
                self._arm(self._connections.idle_timeout_s, self._idle_expired)

    async def _run(self, scope: dict[str, Any], body: bytes, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None:  # pragma: no cover - requests only arrive once connected
            return
        state: dict[str, Any] = {"start": None, "done": False, "chunked": False}
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            # The body was delivered: wait until the response is done (or the peer leaves).
            while not self._closed and not state["done"]:
                await asyncio.sleep(0.05)
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if self._closed:
                return
            kind = message["type"]
            if kind == "http.response.start":
                state["start"] = message
                return
            if kind != "http.response.body" or state["done"]:
                return
            chunk: bytes = message.get("body", b"")
            more: bool = message.get("more_body", False)
            start = state["start"]
            if start is not None:
                state["start"] = None
                head, state["chunked"] = frame_head(start, len(chunk), more, keep_alive)
                if state["chunked"]:
                    transport.write(head + chunk_frame(chunk, more))
                else:
                    transport.write(head + chunk if len(chunk) < 65536 else head)
                    if len(chunk) >= 65536:
                        transport.write(chunk)
            elif state["chunked"]:
                transport.write(chunk_frame(chunk, more))
            elif chunk:
                transport.write(chunk)
            if not more:
                state["done"] = True
            elif not self._writable.is_set():
                await self._writable.wait()  # a streamed answer waits for a slow reader

        if not self._writable.is_set():
            # The peer is not reading our answers: run its next request only once it does.
            await self._writable.wait()
        try:
            await self._app(scope, receive, send)
        except Exception:
            log.exception("unhandled error in the ASGI app for %s", scope.get("path"))
            if state["start"] is None and not state["done"]:
                if not self._closed:
                    transport.write(
                        simple(500, b'{"error":"internal server error"}', keep_alive=False)
                    )
                transport.close()
                return
        if not state["done"]:
            # The app returned without finishing its response: the connection is unusable.
            transport.close()
            return
        if not keep_alive:
            transport.close()

    def _fail(self, status: int, body: bytes) -> None:
        """Answer a request that cannot be parsed or accepted, then close the connection.

        Pipelined requests that arrived whole before it are answered first, in order:
        a client matches answers to requests by position, so a refusal sent early would
        read as the answer to a good request. Meanwhile nothing more is read."""
        transport = self._transport
        if transport is None or self._closed or self._refusal is not None:
            return
        answer = simple(status, body, keep_alive=False)
        if not self._running:
            self._close_with(answer)
            return
        self._refusal = answer
        self._arm(None)
        if not self._paused:
            self._paused = True
            transport.pause_reading()

    def _close_with(self, answer: bytes) -> None:
        transport = self._transport
        if transport is None or self._closed or transport.is_closing():
            return
        self._closed = True
        self._queue.clear()
        transport.write(answer)
        transport.close()


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a refused request."""
