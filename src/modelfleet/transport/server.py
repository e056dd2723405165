"""The HTTP/1.1 server the site's OIP server and the gateway run on.

Two engines, one interface (``serve_http``):

- ``builtin`` (default): a small HTTP/1.1 server on uvloop + httptools written for the OIP
  hot path. The request body is buffered before the app runs (the app needs all of it to
  decode anyway), and each response goes out in *one* ``write``: status line, headers and
  body together. uvicorn writes headers and body separately, and on loopback the second
  syscall with its TCP segment and wake-up of the client was a quarter of the server's CPU
  time under load (py-spy, docs/benchmarks.md). Keep-alive, pipelining (answered in order),
  ``Expect: 100-continue``, chunked request bodies (httptools decodes them), body-size limit
  (413) and malformed requests (400, connection closed) are handled.
- ``uvicorn``: uvicorn with uvloop + httptools, the general-purpose choice, kept for
  comparison and as a fallback.

Both run one process: the event loop parses HTTP on one core while onnxruntime computes on
the other (it releases the GIL). Access logs are off: a log line per request costs more
than a small model's whole inference. Both run the app's ASGI lifespan (start-up and
shutdown) around serving, and keep idle connections ``IDLE_TIMEOUT_S``: callers of a site
or a gateway keep their connections for long, and a reconnect is one more round trip.

TLS: given :class:`~modelfleet.pki.tls.ServerTlsFiles`, both engines serve HTTPS and ask
for (do not require) a client certificate from the fleet CA. Each connection's scope then
says ``https`` and carries the ``tls`` extension and ``modelfleet.peer``, the identity the
verified client certificate names (:func:`~modelfleet.pki.tls.tls_extensions`), computed
once per connection rather than once per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from ssl import SSLContext
from typing import Any, Literal

from modelfleet.pki.tls import ServerTlsFiles
from modelfleet.transport.asgi import ASGIApp, Lifespan, LifespanFailed
from modelfleet.transport.http11 import (
    IDLE_TIMEOUT_S,
    MAX_BODY_BYTES,
    MAX_CONNECTIONS,
    REQUEST_TIMEOUT_S,
    Connections,
    HttpProtocol,
)

__all__ = ["Engine", "serve_http", "start_builtin"]

log = logging.getLogger("modelfleet.transport.server")

Engine = Literal["builtin", "uvicorn"]


def serve_http(
    app: Any,
    *,
    host: str,
    port: int,
    log_level: str = "info",
    engine: Engine = "builtin",
    sock: socket.socket | None = None,
    tls: ServerTlsFiles | None = None,
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, then return; exit 3 if its start-up fails.

    With ``sock`` (already bound, see :mod:`modelfleet.transport.listen`), serve on it;
    ``host`` and ``port`` then only describe it. With ``tls``, serve HTTPS.
    """
    if engine == "uvicorn":
        import uvicorn

        from modelfleet.transport.graceful import GracefulServer
        from modelfleet.transport.uvicorn_tls import uvicorn_tls_options

        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            loop="uvloop",
            lifespan="on",
            interface="asgi3",
            backlog=2048,
            timeout_keep_alive=int(IDLE_TIMEOUT_S),
            **uvicorn_tls_options(tls),
        )
        server = GracefulServer(config)  # exits 0 on SIGTERM, as the builtin engine
        server.run(sockets=None if sock is None else [sock])
        if not server.started:
            raise SystemExit(3)  # as uvicorn.run: the app failed to start
        return
    import uvloop

    try:
        uvloop.run(_serve_forever(app, host, port, sock, tls))
    except LifespanFailed as exc:
        log.error("application start-up failed: %s", exc)
        raise SystemExit(3) from None  # as uvicorn does


async def _serve_forever(
    app: ASGIApp,
    host: str,
    port: int,
    sock: socket.socket | None = None,
    tls: ServerTlsFiles | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    lifespan = Lifespan(app)
    await lifespan.startup()
    connections = Connections()
    server = await start_builtin(
        app,
        host,
        port,
        sock=sock,
        ssl=tls.context() if tls is not None else None,
        connections=connections,
    )
    log.info("serving on %s://%s:%s", "https" if tls else "http", host, port)
    try:
        await stop.wait()
    finally:
        server.close()  # no new connections
        connections.shutdown()  # idle ones close now, busy ones once answered
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)
        await lifespan.shutdown()


async def start_builtin(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    sock: socket.socket | None = None,
    ssl: SSLContext | None = None,
    max_connections: int = MAX_CONNECTIONS,
    timeouts: tuple[float, float] = (REQUEST_TIMEOUT_S, IDLE_TIMEOUT_S),
    connections: Connections | None = None,
) -> asyncio.Server:
    """Start the builtin engine on the running loop (tests use it directly).

    Listens on ``host:port`` (``port`` 0: any free port; read it back from the returned
    server's ``sockets``), or on ``sock`` when given (already bound; ``port`` is then
    ignored); with ``ssl``, speaks HTTPS. ``timeouts`` are (request, keep-alive idle)
    seconds: tests shorten them to see a trickling peer cut off without waiting 30 s.
    ``connections``: the registry to close the connections with at shutdown
    (:meth:`Connections.shutdown`; it then holds ``max_connections`` and ``timeouts``).
    """
    loop = asyncio.get_running_loop()
    # The scope's "server" (host, port): the bound port once known, not the 0 asked for.
    address = (host, port)

    if connections is None:
        connections = Connections(max_connections, timeouts)

    def protocol() -> HttpProtocol:
        return HttpProtocol(app, loop, max_body_bytes, address, connections)

    if sock is not None:
        address = (host, int(sock.getsockname()[1]))
        return await loop.create_server(protocol, sock=sock, backlog=2048, ssl=ssl)
    server = await loop.create_server(
        protocol, host, port, backlog=2048, reuse_address=True, ssl=ssl
    )
    address = (host, int(server.sockets[0].getsockname()[1]))
    return server
