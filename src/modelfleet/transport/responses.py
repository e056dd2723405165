"""HTTP/1.1 response framing for the builtin server: status line, headers, chunks.

Kept apart from the connection logic (:mod:`.server`) because it is pure byte assembly:
what goes on the wire for an ASGI ``http.response.start`` and its body.
"""

from __future__ import annotations

from modelfleet.transport.asgi import Message

__all__ = ["chunk", "head", "simple"]

REASONS = {
    100: b"Continue",
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


def head(start: Message, length: int, more: bool, keep_alive: bool) -> tuple[bytes, bool]:
    """Status line and headers; chunked only when streaming without a content-length."""
    status = int(start["status"])
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Status"))]
    has_length = False
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-length":
            has_length = True
        parts.append(b"%s: %s\r\n" % (name, value))
    chunked = False
    if not has_length:
        if more:
            chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        else:
            parts.append(b"content-length: %d\r\n" % length)
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), chunked


def chunk(data: bytes, more: bool) -> bytes:
    out = b"%x\r\n%s\r\n" % (len(data), data) if data else b""
    return out if more else out + b"0\r\n\r\n"


def simple(status: int, body: bytes, *, keep_alive: bool) -> bytes:
    framed, _ = head(
        {"status": status, "headers": [(b"content-type", b"application/json")]},
        len(body),
        False,
        keep_alive,
    )
    return framed + body
