"""Plain ASGI, shared by the hand-written hot paths: the types, a header lookup, a bounded
body reader and a one-call response.

The site's OIP server, the gateway and the hub's federation fast path are bare ASGI
callables (no framework: routing and middleware cost more than their real work, see
docs/benchmarks.md). They need the same few pieces, defined once here. The types are
structurally the ones Starlette and uvicorn use, so these callables plug into either
without a framework import on the site.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = [
    "JSON",
    "ASGIApp",
    "Lifespan",
    "LifespanFailed",
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

log = logging.getLogger("modelfleet.transport")


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


class LifespanFailed(Exception):
    """The app answered ``lifespan.startup.failed``: the server must not start."""


class Lifespan:
    """The ASGI lifespan protocol, for a server that runs it itself (the builtin one).

    The gateway starts its router (directory, probes) on ``lifespan.startup`` and closes
    its connections on ``lifespan.shutdown``; the site server shuts its inference threads.
    As uvicorn's default ("auto"): an app that raises instead of answering does not speak
    the protocol and is served anyway; one that answers ``startup.failed`` is not.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._incoming: asyncio.Queue[Message] = asyncio.Queue()
        self._replies: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._running = False

    async def _run(self) -> None:
        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        try:
            await self.app(scope, self._incoming.get, self._replies.put)
        except Exception as exc:
            log.debug("the app does not speak the lifespan protocol: %r", exc)
        await self._replies.put({"type": "lifespan.ended"})

    async def startup(self) -> None:
        """Start the app; :class:`LifespanFailed` if it refuses."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._incoming.put({"type": "lifespan.startup"})
        reply = await self._replies.get()
        if reply["type"] == "lifespan.startup.failed":
            raise LifespanFailed(str(reply.get("message") or "application startup failed"))
        self._running = reply["type"] == "lifespan.startup.complete"

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop the app (waiting at most ``timeout_s``); nothing if it never started."""
        if not self._running:
            return
        self._running = False
        await self._incoming.put({"type": "lifespan.shutdown"})
        try:
            async with asyncio.timeout(timeout_s):
                while (await self._replies.get())["type"] not in (
                    "lifespan.shutdown.complete",
                    "lifespan.shutdown.failed",
                    "lifespan.ended",
                ):
                    pass
        except TimeoutError:
            log.warning("the app did not finish its shutdown within %.0f s", timeout_s)
