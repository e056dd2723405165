"""A small keep-alive HTTP/1.1 client on asyncio streams, for the SDK, gateway and cascade.

Why not httpx: the gateway's budget is well under a millisecond of added latency per request
on loopback, and a general-purpose client spends most of that on machinery the routing layer
does not need (cookies, redirects, auth flows, per-request config merging): measured side by
side in ``bench/gateway_clients.py`` (docs/benchmarks.md). This client does one thing: send
a request with a body to a known origin over a pooled connection and read a
``Content-Length``, chunked or read-until-close response of at most ``max_body_bytes``.
Cancelling the awaiting task closes the connection, which is how a losing hedged request is
cancelled: the site sees its client go away.

Errors: :class:`TransportFailure` for anything below HTTP (refused, reset, EOF, a malformed
or oversized response; timeouts are the caller's, through cancellation). A pooled connection
that the server closed while idle is retried once on a fresh connection, transparently, as
browsers do: only when nothing at all came back on it, so no answer is ever read twice.

TLS: an ``https://`` origin is dialled with the pool's client context (the fleet CA, and the
caller's own certificate when it has one: a gateway's, a site's for its cascade); the host
name is checked as any client checks it. An origin may also name the *identity* it expects
(:class:`~modelfleet.pki.Identity`, e.g. site ``plant-in``): the certificate must name
exactly that site, or the connection is closed before a byte of the request is written and
:class:`PeerMismatch` is raised. So a URL that now leads to another site's port (a site that
crashed after registering, a port reused) never gets a request meant for the site chosen.

Headers are written in one place (:func:`_head`), which refuses names and values holding
CR, LF or characters outside latin-1: nothing a caller passes can add a header line.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from modelfleet.errors import InvalidInput, PeerMismatch, TransportFailure
from modelfleet.pki.identity import Identity
from modelfleet.pki.tls import TlsFiles, client_context, peer_identity

__all__ = [
    "MAX_RESPONSE_BYTES",
    "HttpResponse",
    "Origin",
    "Pool",
]

_MAX_HEAD = 64 * 1024
_MAX_TRAILERS = 100
_DIGITS = re.compile(r"[0-9]{1,19}")
_STATUS = re.compile(r"[0-9]{3}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_MAX_IDLE_PER_ORIGIN = 64
#: Largest response body read (the same bound as the site's request bodies): a broken or
#: hostile peer cannot make a client buffer without limit.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
_READ = 64 * 1024


@dataclass(frozen=True, slots=True)
class Origin:
    """``http(s)://host:port`` plus the path prefix requests are appended to, and for TLS
    the identity the server's certificate must name (None: any fleet certificate)."""

    host: str
    port: int
    prefix: str = ""
    tls: bool = False
    identity: Identity | None = None

    @classmethod
    def parse(cls, url: str, identity: Identity | None = None) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(f"site URL {url!r} is not supported: use https://HOST:PORT")
        tls = parts.scheme == "https"
        try:
            port = parts.port or (443 if tls else 80)
        except ValueError as exc:
            raise InvalidInput(f"site URL {url!r} has an invalid port") from exc
        return cls(parts.hostname, port, parts.path.rstrip("/"), tls, identity)

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.hostport}{self.prefix}"


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.transport.abort()


class Pool:
    """Idle connections per origin, bound to the event loop that created them."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = 5.0,
        max_body_bytes: int = MAX_RESPONSE_BYTES,
        tls: TlsFiles | None = None,
    ) -> None:
        self._idle: dict[_Key, deque[_Conn]] = {}
        self.connect_timeout_s = connect_timeout_s
        self.max_body_bytes = max_body_bytes
        self.tls = tls or TlsFiles()
        self._context: ssl.SSLContext | None = None
        self._cert_stamp: tuple[int, int] | None = None

    def _ssl(self) -> ssl.SSLContext:
        """The client context, rebuilt when the client certificate file changed (a site
        renews its certificate in place): new connections then present the new one."""
        stamp = _file_stamp(self.tls.cert_file)
        if self._context is None or stamp != self._cert_stamp:
            self._context = client_context(
                self.tls.ca_file, cert_file=self.tls.cert_file, key_file=self.tls.key_file
            )
            self._cert_stamp = stamp
        return self._context

    async def request(
        self,
        origin: Origin,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        """One exchange. Cancel the awaiting task to abandon it (the connection is closed)."""
        head = _head(method, origin, path, body, headers)
        key = (origin.host, origin.port, origin.tls, origin.identity)
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.usable():
                conn.close()
                continue
            try:
                return await self._exchange(key, conn, head, body, method)
            except _Stale:
                continue  # the server closed it while idle: try another / a fresh one
        conn = await self._connect(origin)
        try:
            return await self._exchange(key, conn, head, body, method)
        except _Stale as exc:
            raise TransportFailure(f"{origin.hostport} closed the connection") from exc

    async def _connect(self, origin: Origin) -> _Conn:
        context = self._ssl() if origin.tls else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    origin.host,
                    origin.port,
                    limit=_MAX_HEAD,
                    ssl=context,
                    server_hostname=origin.host if context is not None else None,
                ),
                self.connect_timeout_s,
            )
        except ssl.SSLCertVerificationError as exc:
            raise TransportFailure(
                f"{origin.url} presented a certificate that does not verify against the "
                f"fleet CA: {exc.verify_message or exc}"
            ) from exc
        except ssl.SSLError as exc:
            raise TransportFailure(f"TLS with {origin.url} failed: {exc}") from exc
        except (OSError, TimeoutError) as exc:
            raise TransportFailure(f"cannot connect to {origin.hostport}: {exc}") from exc
        if origin.identity is not None:
            named = peer_identity(writer.get_extra_info("ssl_object"))
            if named != origin.identity:
                writer.close()
                raise PeerMismatch(
                    f"{origin.url} is not {origin.identity}: its certificate names "
                    f"{named or 'no fleet identity'}; nothing was sent to it"
                )
        return _Conn(reader, writer)

    async def _exchange(
        self, key: _Key, conn: _Conn, head: bytes, body: bytes, method: str
    ) -> HttpResponse:
        received = False
        reuse = False
        try:
            conn.writer.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                conn.writer.write(body)
            raw = await conn.reader.readuntil(b"\r\n\r\n")
            received = True
            status, headers = _parse_head(raw)
            data, reuse = await _read_body(
                conn.reader, headers, method, status, self.max_body_bytes
            )
        except asyncio.IncompleteReadError as exc:
            conn.close()
            if not received and not exc.partial:
                raise _Stale from exc
            raise TransportFailure("connection closed mid-response") from exc
        except (ConnectionError, OSError) as exc:
            conn.close()
            if not received:
                raise _Stale from exc
            raise TransportFailure(f"connection failed: {exc}") from exc
        except asyncio.LimitOverrunError as exc:
            conn.close()
            raise TransportFailure("response head too large") from exc
        except BaseException:
            conn.close()  # cancelled (hedge lost, deadline) or a protocol error
            raise
        if reuse and conn.usable():
            idle = self._idle.setdefault(key, deque())
            if len(idle) < _MAX_IDLE_PER_ORIGIN:
                idle.append(conn)
            else:
                conn.close()
        else:
            conn.close()
        return HttpResponse(status, headers, data)

    def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()


_Key = tuple[str, int, bool, Identity | None]


class _Stale(Exception):
    """Nothing came back on a (possibly reused) connection: safe to retry on a new one."""


def _head(
    method: str, origin: Origin, path: str, body: bytes, headers: dict[str, str] | None
) -> bytes:
    target = f"{origin.prefix}{path}"
    if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target):
        raise InvalidInput(f"refusing to send {method!r} {target!r}: not a valid request line")
    lines = [f"{method} {target} HTTP/1.1", f"host: {origin.hostport}"]
    if body or method in ("POST", "PUT"):
        lines.append(f"content-length: {len(body)}")
    if headers:
        for name, value in headers.items():
            if not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
                raise InvalidInput(
                    f"refusing to send header {name!r}: names must be HTTP tokens and values "
                    "may not hold CR, LF or characters outside latin-1"
                )
            lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


#: RFC 9110 tokens (methods, header names), field values (visible latin-1, spaces and tabs
#: inside), request targets (no spaces or control characters).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_TARGET = re.compile(r"[\x21-\x7e]+")


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not _STATUS.fullmatch(parts[1]):
        raise TransportFailure(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if parts[0] == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        headers.setdefault("connection", "close")
    return int(parts[1]), headers


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], method: str, status: int, limit: int
) -> tuple[bytes, bool]:
    """The body (at most ``limit`` bytes) and whether the connection may be reused."""
    keep = headers.get("connection", "").lower() != "close"
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return b"", keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader, limit), keep
    length = headers.get("content-length")
    if length is not None:
        if not _DIGITS.fullmatch(length):  # not str.isdigit: it admits "²", which int() refuses
            raise TransportFailure(f"bad Content-Length {length[:40]!r}")
        if int(length) > limit:
            raise TransportFailure(f"response body of {length} bytes exceeds {limit}")
        return await reader.readexactly(int(length)), keep
    # Neither: the body runs until the server closes (HTTP/1.0 style), so no reuse.
    chunks: list[bytes] = []
    size = 0
    while data := await reader.read(_READ):
        size += len(data)
        if size > limit:
            raise TransportFailure(f"response body exceeds {limit} bytes")
        chunks.append(data)
    return b"".join(chunks), False


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        digits = size_line.split(b";", 1)[0].strip()
        # Hex digits only: int(x, 16) also takes "-5", "+5" and "0x5" (a negative size
        # made readexactly raise ValueError), and a 17th digit could only be an attack.
        if not _HEX.fullmatch(digits):
            raise TransportFailure(f"bad chunk size {digits[:20]!r}")
        chunk_size = int(digits, 16)
        if chunk_size == 0:
            for _ in range(_MAX_TRAILERS):
                if (await reader.readuntil(b"\r\n")) == b"\r\n":
                    return b"".join(chunks)
            raise TransportFailure(f"more than {_MAX_TRAILERS} trailer lines")
        size += chunk_size
        if size > limit:
            raise TransportFailure(f"response body exceeds {limit} bytes")
        chunks.append(await reader.readexactly(chunk_size))
        if await reader.readexactly(2) != b"\r\n":
            raise TransportFailure("bad chunk framing")


def _file_stamp(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)
