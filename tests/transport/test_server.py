"""The builtin HTTP/1.1 server: idle and trickling connections closed, the ASGI lifespan."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modelfleet.transport import server as listener
from modelfleet.transport.asgi import Lifespan, LifespanFailed


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(
    "partial", [b"", b"POST /v2 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab"]
)
def test_idle_and_slow_connections_are_closed(partial: bytes) -> None:
    async def scenario() -> bytes:
        server = await listener.start_builtin(_app, "127.0.0.1", 0, timeouts=(0.2, 0.2))
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


class LifespanApp:
    """Records the lifespan messages it gets; ``fail`` refuses to start."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.events: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            self.events.append(message["type"])
            if message["type"] == "lifespan.startup":
                if self.fail:
                    await send({"type": "lifespan.startup.failed", "message": "no directory"})
                    return
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return


def test_lifespan_runs_around_serving() -> None:
    app = LifespanApp()

    async def scenario() -> None:
        lifespan = Lifespan(app)
        await lifespan.startup()
        assert app.events == ["lifespan.startup"]
        await lifespan.shutdown()

    asyncio.run(scenario())
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]


async def http_only(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        raise RuntimeError("only http")


def test_a_refused_start_up_stops_the_server_and_an_app_without_lifespan_is_served() -> None:
    async def scenario() -> None:
        with pytest.raises(LifespanFailed, match="no directory"):
            await Lifespan(LifespanApp(fail=True)).startup()
        plain = Lifespan(http_only)  # no lifespan protocol: served anyway
        await plain.startup()
        await plain.shutdown()

    asyncio.run(scenario())
