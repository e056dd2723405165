"""The builtin HTTP/1.1 server closes connections that idle or trickle."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modelfleet.transport import server as listener


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(
    "partial", [b"", b"POST /v2 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab"]
)
def test_idle_and_slow_connections_are_closed(
    monkeypatch: pytest.MonkeyPatch, partial: bytes
) -> None:
    monkeypatch.setattr(listener, "IDLE_TIMEOUT_S", 0.2)
    monkeypatch.setattr(listener, "REQUEST_TIMEOUT_S", 0.2)

    async def scenario() -> bytes:
        server = await listener.start_builtin(_app, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await asyncio.wait_for(reader.readuntil(b"ok"), 2)
        assert first.startswith(b"HTTP/1.1 200")
        writer.write(partial)
        rest = await asyncio.wait_for(reader.read(), 2)  # returns b"" once the server closes
        writer.close()
        server.close()
        return rest

    rest = asyncio.run(scenario())
    if partial:
        assert rest.startswith(b"HTTP/1.1 408")
    else:
        assert rest == b""
