"""The routing gateway: an Open Inference Protocol v2 endpoint in front of the whole fleet.

Any OIP client (curl, Triton's client, KServe's) talks to the gateway as if it were one
server; the gateway routes each request with the same :class:`Router` as the SDK (residency,
model readiness, health, latency, retries, hedging). The data region comes from the
``x-modelfleet-data-region`` header, else the gateway's default; without either the request
is refused (400), never sent somewhere it might not be allowed to go. A header outside the
region grammar (:func:`~modelfleet.routing.residency.check_data_region`) is a 400 naming the
header and the rule; ``/metrics`` shows how many regions the router remembers and probes for.

Inference bodies are forwarded byte for byte (JSON or binary tensors alike): the gateway never
decodes tensors, which is what keeps its added latency well under a millisecond. It is a bare
ASGI application (no framework routing) for the same reason.

Answers carry ``x-modelfleet-site`` (who served) and ``x-request-id``.

Callers need an infer token (:mod:`.gateway_access`; 401/403 as at a site, the health probes
open); the gateway calls sites with its own. With a static site list (no hub, so no grant
list) the gateway checks nothing itself and forwards the caller's ``Authorization`` to the
site, which decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import orjson

from modelfleet._version import __version__
from modelfleet.errors import InvalidInput, ModelfleetError
from modelfleet.grants import Grant
from modelfleet.oip.headers import (
    INFERENCE_HEADER_LENGTH,
    REGION_HEADER,
    REQUEST_ID_HEADER,
    SITE_HEADER,
)
from modelfleet.oip.paths import MODELS_PREFIX, parse_model_path
from modelfleet.pki.tls import ServerTlsFiles
from modelfleet.routing.gateway_access import REFRESH_S as GRANTS_REFRESH_S
from modelfleet.routing.gateway_access import GatewayAccess
from modelfleet.routing.residency import check_data_region
from modelfleet.routing.router import Router
from modelfleet.transport.asgi import Receive, Scope, Send, read_body, respond
from modelfleet.transport.server import Engine, serve_http

__all__ = ["Gateway", "serve"]

log = logging.getLogger(__name__)

_FORWARD = (b"content-type", INFERENCE_HEADER_LENGTH.encode())
_BACK = ("content-type", INFERENCE_HEADER_LENGTH)
_REGION = REGION_HEADER.encode()
_REQUEST_ID = REQUEST_ID_HEADER.encode()
_SITE = SITE_HEADER.encode()
_AUTHORIZATION = b"authorization"
#: Probes: answered without a credential (they name no model).
_OPEN = frozenset({"/v2/health/live", "/v2/health/ready"})
#: Largest request body forwarded (a site refuses larger ones anyway); larger ones get 413.
MAX_BODY_BYTES = 64 * 1024 * 1024


class Gateway:
    """ASGI app; ``default_region`` applies when a request has no region header."""

    def __init__(
        self,
        router: Router,
        *,
        default_region: str | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        access: GatewayAccess | None = None,
    ) -> None:
        self.router = router
        #: The callers' check; None (a static site list): pass their credential through.
        self.access = access
        self.default_region = (
            None if default_region is None else check_data_region(default_region, "--data-region")
        )
        self.max_body_bytes = max_body_bytes
        self.errors = 0
        self._refresher: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        path: str = scope["path"]
        grant: Grant | None = None
        if self.access is not None and path not in _OPEN:
            named = parse_model_path(path) if path.startswith(MODELS_PREFIX) else None
            checked = self.access.check(scope, named.name if named is not None else None)
            if isinstance(checked, tuple):
                status, message = checked
                extra = [(b"www-authenticate", b"Bearer")] if status == 401 else None
                await respond(send, status, orjson.dumps({"error": message}), headers=extra)
                return
            grant = checked
        if path.startswith(MODELS_PREFIX):
            await self._model(scope, receive, send, path, grant)
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
                if self.access is not None:
                    await asyncio.to_thread(self.access.refresh)
                    self._refresher = asyncio.create_task(self._refresh_grants(self.access))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._refresher is not None:
                    self._refresher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._refresher
                if self.access is not None:
                    self.access.close()
                await self.router.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _refresh_grants(access: GatewayAccess) -> None:
        """Fetch the grant list again every few seconds: how soon a revocation applies."""
        while True:
            await asyncio.sleep(GRANTS_REFRESH_S)
            await asyncio.to_thread(access.refresh)

    async def _model(
        self, scope: Scope, receive: Receive, send: Send, path: str, grant: Grant | None
    ) -> None:
        target = parse_model_path(path)
        if target is None:
            await _reply(send, 404, {"error": "no such endpoint"})
            return
        model, version = target.name, target.version
        if version == -1:
            await _reply(
                send, 404, {"error": f"model {model!r} has no such version (versions are integers)"}
            )
            return
        method: str = scope["method"]
        if (target.action == "infer") != (method == "POST"):
            await _reply(send, 405, {"error": "method not allowed"})
            return
        headers: dict[str, str] = {}
        region = self.default_region
        request_id: str | None = None
        for name, value in scope["headers"]:
            if name in _FORWARD or (name == _AUTHORIZATION and self.access is None):
                headers[name.decode("latin-1")] = value.decode("latin-1")
            elif name == _REGION:
                region = value.decode("latin-1")
            elif name == _REQUEST_ID:
                request_id = value.decode("latin-1")
        body = b""
        if method == "POST":
            read = await read_body(scope, receive, self.max_body_bytes)
            if read is None:
                await _reply(
                    send, 413, {"error": f"request body exceeds {self.max_body_bytes} bytes"}
                )
                return
            body = read
        try:
            if not region:
                raise InvalidInput(
                    f"no data region: send the {REGION_HEADER} header (e.g. EU), or start the "
                    "gateway with --data-region"
                )
            routed = await self.router.send(
                model,
                path,
                data_region=check_data_region(region, REGION_HEADER),
                method=method,
                body=body,
                headers=headers,
                version=version,
                request_id=request_id,
                only=grant.sites if grant is not None else None,
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
        out.append((_SITE, routed.site.name.encode()))
        out.append((_REQUEST_ID, routed.request_id.encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": out})
        await send({"type": "http.response.body", "body": response.body})

    def _metrics(self) -> bytes:
        lines = []
        for key, value in self.router.counters.as_dict().items():
            name = f"modelfleet_gateway_{key}_total"
            lines += [f"# TYPE {name} counter", f"{name} {value}"]
        lines += ["# TYPE modelfleet_gateway_errors_total counter"]
        lines += [f"modelfleet_gateway_errors_total {self.errors}"]
        # What the router keeps warm: bounded whatever regions callers send (routing/probing.py).
        prober = self.router.prober
        lines += ["# TYPE modelfleet_gateway_probes_total counter"]
        lines += [f"modelfleet_gateway_probes_total {prober.probes}"]
        lines += ["# TYPE modelfleet_gateway_remembered_regions gauge"]
        lines += [f"modelfleet_gateway_remembered_regions {prober.remembered}"]
        lines += ["# TYPE modelfleet_gateway_probe_targets gauge"]
        lines += [f"modelfleet_gateway_probe_targets {len(prober.targets())}"]
        lines += ["# TYPE modelfleet_gateway_site_latency_ewma_seconds gauge"]
        for row in self.router.snapshot():
            if row["ewma_ms"] is not None:
                seconds = float(str(row["ewma_ms"])) / 1e3
                lines.append(
                    f'modelfleet_gateway_site_latency_ewma_seconds{{site="{row["site"]}"}} '
                    f"{seconds:.6f}"
                )
        return ("\n".join(lines) + "\n").encode()


async def _reply(send: Send, status: int, doc: Any) -> None:
    await respond(send, status, orjson.dumps(doc))


def serve(
    gateway: Gateway,
    host: str,
    port: int,
    log_level: str = "warning",
    *,
    sock: socket.socket | None = None,
    engine: Engine = "builtin",
    tls: ServerTlsFiles | None = None,
) -> None:
    """Run the gateway on the builtin HTTP/1.1 server (or uvicorn); on ``sock`` when given
    (already bound, see :mod:`modelfleet.transport.listen`), else on ``host:port``. With
    ``tls`` (the gateway's certificate from the fleet CA), HTTPS.

    The builtin server adds less latency per request than uvicorn (one write per
    response; ``bench/gateway_clients.py``), and it is the one the sites run on.
    """
    serve_http(
        gateway, host=host, port=port, log_level=log_level, engine=engine, sock=sock, tls=tls
    )
