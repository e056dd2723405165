"""The routing gateway: an Open Inference Protocol v2 endpoint in front of the whole fleet.

Any OIP client (curl, Triton's client, KServe's) talks to the gateway as if it were one
server; the gateway routes each request with the same :class:`Router` as the SDK (residency,
model readiness, health, latency, retries, hedging). The data region comes from the
``x-modelfleet-data-region`` header, else the gateway's default; without either the request
is refused (400), never sent somewhere it might not be allowed to go.

Inference bodies are forwarded byte for byte (JSON or binary tensors alike): the gateway never
decodes tensors, which is what keeps its added latency well under a millisecond. It is a bare
ASGI application (no framework routing) for the same reason.

Answers carry ``x-modelfleet-site`` (who served) and ``x-request-id``.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import orjson

from modelfleet import __version__
from modelfleet.errors import InvalidInput, ModelfleetError
from modelfleet.routing.router import REGION_HEADER, REQUEST_ID_HEADER, Router
from modelfleet.transport.asgi import Receive, Scope, Send, respond

__all__ = ["Gateway", "serve"]

log = logging.getLogger(__name__)

_FORWARD = (b"content-type", b"inference-header-content-length")
_BACK = ("content-type", "inference-header-content-length")


class Gateway:
    """ASGI app; ``default_region`` applies when a request has no region header."""

    def __init__(self, router: Router, *, default_region: str | None = None) -> None:
        self.router = router
        self.default_region = default_region
        self.errors = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/v2/models/"):
            await self._model(scope, receive, send, path, method)
        elif path == "/v2/health/live":
            await _reply(send, 200, {"live": True})
        elif path == "/v2/health/ready":
            ready = any(s.models is None or s.models for s in self.router.sites)
            await _reply(send, 200 if ready else 503, {"ready": ready})
        elif path in ("/v2", "/v2/"):
            await _reply(
                send,
                200,
                {"name": "modelfleet-gateway", "version": __version__, "extensions": []},
            )
        elif path == "/metrics":
            await respond(send, 200, self._metrics(), content_type=b"text/plain; version=0.0.4")
        elif path == "/healthz":
            await _reply(
                send,
                200,
                {
                    "status": "ok",
                    "directory": self.router.directory.source,
                    "sites": self.router.snapshot(),
                    "counters": self.router.counters.as_dict(),
                },
            )
        else:
            await _reply(send, 404, {"error": "no such endpoint"})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.router.start()
                except ModelfleetError as exc:
                    await send({"type": "lifespan.startup.failed", "message": exc.message})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.router.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _model(
        self, scope: Scope, receive: Receive, send: Send, path: str, method: str
    ) -> None:
        parts = path[len("/v2/models/") :].split("/")
        model = parts[0]
        rest = parts[1:]
        version: int | None = None
        if len(rest) >= 2 and rest[0] == "versions":
            if not rest[1].isdigit():
                await _reply(send, 404, {"error": f"model {model!r} has no version {rest[1]!r}"})
                return
            version = int(rest[1])
            rest = rest[2:]
        action = rest[0] if rest else ""
        if len(rest) > 1 or action not in ("", "infer", "ready") or not model:
            await _reply(send, 404, {"error": "no such endpoint"})
            return
        if (action == "infer") != (method == "POST"):
            await _reply(send, 405, {"error": "method not allowed"})
            return
        headers: dict[str, str] = {}
        region = self.default_region
        request_id: str | None = None
        for name, value in scope["headers"]:
            if name in _FORWARD:
                headers[name.decode("latin-1")] = value.decode("latin-1")
            elif name == b"x-modelfleet-data-region":
                region = value.decode("latin-1")
            elif name == b"x-request-id":
                request_id = value.decode("latin-1")
        body = await _body(receive) if method == "POST" else b""
        try:
            if not region:
                raise InvalidInput(
                    f"no data region: send the {REGION_HEADER} header (e.g. EU), or start the "
                    "gateway with --data-region"
                )
            routed = await self.router.send(
                model,
                path,
                data_region=region,
                method=method,
                body=body,
                headers=headers,
                version=version,
                request_id=request_id,
            )
        except ModelfleetError as exc:
            self.errors += 1
            await _reply(send, exc.status, {"error": exc.message})
            return
        response = routed.response
        out = [
            (name.encode(), response.headers[name].encode("latin-1"))
            for name in _BACK
            if name in response.headers
        ]
        out.append((b"content-length", str(len(response.body)).encode()))
        out.append((b"x-modelfleet-site", routed.site.name.encode()))
        out.append((REQUEST_ID_HEADER.encode(), routed.request_id.encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": out})
        await send({"type": "http.response.body", "body": response.body})

    def _metrics(self) -> bytes:
        lines = []
        for key, value in self.router.counters.as_dict().items():
            name = f"modelfleet_gateway_{key}_total"
            lines += [f"# TYPE {name} counter", f"{name} {value}"]
        lines += ["# TYPE modelfleet_gateway_errors_total counter"]
        lines += [f"modelfleet_gateway_errors_total {self.errors}"]
        lines += ["# TYPE modelfleet_gateway_site_latency_ewma_seconds gauge"]
        for row in self.router.snapshot():
            if row["ewma_ms"] is not None:
                seconds = float(str(row["ewma_ms"])) / 1e3
                lines.append(
                    f'modelfleet_gateway_site_latency_ewma_seconds{{site="{row["site"]}"}} '
                    f"{seconds:.6f}"
                )
        return ("\n".join(lines) + "\n").encode()


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _reply(send: Send, status: int, doc: Any) -> None:
    await respond(send, status, orjson.dumps(doc))


def serve(
    gateway: Gateway,
    host: str,
    port: int,
    log_level: str = "warning",
    *,
    sock: socket.socket | None = None,
) -> None:
    """Run the gateway with uvicorn (uvloop and httptools when installed); on ``sock`` when
    given (already bound, see :mod:`modelfleet.transport.listen`), else on ``host:port``."""
    import uvicorn

    config = uvicorn.Config(
        gateway,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        loop="auto",
        http="auto",
        lifespan="on",
        # Clients of a gateway keep connections for long; uvicorn's 5 s would make them
        # reconnect (one more round trip) after every pause.
        timeout_keep_alive=75,
    )
    server = uvicorn.Server(config)
    server.run(sockets=None if sock is None else [sock])
    if not server.started:
        raise SystemExit(3)  # as uvicorn.run: the app failed to start
