"""Plain ASGI, shared by the hand-written hot paths: the types, a header lookup, a bounded
body reader and a one-call response.

The site's OIP server, the gateway and the hub's federation fast path are bare ASGI
callables (no framework: routing and middleware cost more than their real work, see
docs/benchmarks.md). They need the same few pieces, defined once here. The types are
structurally the ones Starlette and uvicorn use, so these callables plug into either
without a framework import on the site.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = [
    "JSON",
    "ASGIApp",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "header",
    "read_body",
    "respond",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = b"application/json"


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case bytes), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or ``None`` once it exceeds ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before anything is read; a
    chunked body is counted as it arrives, so an endless one cannot fill the memory. A
    client that leaves mid-body yields ``b""`` (nobody is waiting for the answer).
    """
    for key, value in scope["headers"]:
        if key == b"content-length":
            if value.isdigit() and int(value) > limit:
                return None
            break
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body if len(body) <= limit else None
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":  # client disconnected
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes = JSON,
    headers: list[tuple[bytes, bytes]] | None = None,
    head: bool = False,
) -> None:
    """A complete response with ``Content-Length``, in two ASGI messages.

    The builtin server (:mod:`modelfleet.transport.server`) turns the pair into one write.
    ``head``: the answer to a HEAD request (headers as for GET, no body).
    """
    out = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if headers:
        out.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": b"" if head else body})
