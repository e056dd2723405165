"""The requests every site of a federated job makes each round, answered without FastAPI.

During a job each selected site posts one update per round, and an idle site long-polls
its tasks. Profiling a 10-site job showed the hub's event loop spending most of each
such request in routing over every API route, dependency resolution and middleware
layers, around well under a millisecond of real work. This ASGI layer recognises exactly
those two requests and serves them through the same functions the FastAPI routes call
(:func:`~modelfleet.hub.api.federation.site_update`, ``site_tasks``): the same
authentication, checks, JSON and error format, body limit and request metrics. Every other
request goes to the app. The FastAPI routes stay: they document the endpoints in
``/docs``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from urllib.parse import parse_qs

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from modelfleet.errors import (
    ArtifactTooLarge,
    InvalidInput,
    ModelfleetError,
    RateLimited,
    Unauthenticated,
)
from modelfleet.hub.api.deps import client_address
from modelfleet.hub.api.federation import MAX_UPDATE_BYTES, off_loop, site_tasks, site_update
from modelfleet.hub.auth import authenticate, authenticate_from_memory
from modelfleet.hub.context import HubContext
from modelfleet.transport.asgi import header, read_body

log = logging.getLogger("modelfleet.hub")

_UPDATE = re.compile(r"^/api/v1/federation/jobs/([^/]+)/rounds/([0-9]{1,9})/updates$")
_TASKS = re.compile(r"^/api/v1/federation/sites/([^/]+)/tasks$")
#: The route templates the request metrics use (as FastAPI would label them).
_UPDATE_ROUTE = "/api/v1/federation/jobs/{job_id}/rounds/{number}/updates"
_TASKS_ROUTE = "/api/v1/federation/sites/{site}/tasks"
MAX_WAIT_S = 120.0


class SiteFastPath:
    """ASGI middleware: serves a site's update posts and task polls directly."""

    def __init__(self, app: ASGIApp, ctx: HubContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if method == "POST" and (match := _UPDATE.fullmatch(path)):
            route = _UPDATE_ROUTE
        elif method == "GET" and (match := _TASKS.fullmatch(path)):
            route = _TASKS_ROUTE
        else:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            bearer = header(scope, b"authorization")
            address = client_address(scope)
            try:
                caller = authenticate_from_memory(self.ctx.store, bearer)
                if caller is None:
                    # Not known from memory: an address over its limit of failures gets
                    # 429 here, before a lookup on the shared thread pool.
                    self.ctx.limiter.check(address, bearer)
                    caller = await off_loop(authenticate, self.ctx.store, bearer)
                    self.ctx.limiter.vouch(bearer)
            except Unauthenticated:
                self.ctx.limiter.failed(address)
                raise
            wait = _wait(scope)  # after authentication: strangers learn nothing
            if route == _UPDATE_ROUTE:
                limit = self._body_limit()
                body = await read_body(scope, receive, limit)
                if body is None:
                    raise _too_large(limit)
                job_id, number = match.group(1), int(match.group(2))
                answer = await site_update(self.ctx, caller, job_id, number, body, wait)
            else:
                answer = await site_tasks(self.ctx, caller, match.group(1), wait)
            status, payload, extra = 200, answer, []
        except ModelfleetError as exc:
            status, payload = exc.status, exc.to_dict()
            extra = [(b"www-authenticate", b"Bearer")] if exc.status == 401 else []
            if isinstance(exc, RateLimited):
                extra = [(b"retry-after", str(exc.retry_after_s).encode())]
        except Exception:  # the hub's error format, never a traceback
            log.exception("unhandled error on %s %s", method, path)
            status, extra = 500, []
            payload = {"error": {"code": "internal", "message": "internal error; see hub log"}}
        await _respond(send, status, orjson.dumps(payload), extra)
        self.ctx.metrics.observe(method, route, status, time.perf_counter() - started)

    def _body_limit(self) -> int:
        return min(MAX_UPDATE_BYTES, self.ctx.settings.max_body_bytes)


def _wait(scope: Scope) -> float:
    raw = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1")).get("wait")
    if not raw:
        return 0.0
    try:
        wait = float(raw[-1])
    except ValueError:
        raise InvalidInput(f"query.wait: not a number: {raw[-1]!r}") from None
    if not math.isfinite(wait) or not 0 <= wait <= MAX_WAIT_S:
        raise InvalidInput(f"query.wait: must be between 0 and {MAX_WAIT_S:g} seconds")
    return wait


def _too_large(limit: int) -> ArtifactTooLarge:
    # The code and message every other capped body gets (hub/api/limits.py).
    message = f"request body exceeds the hub's limit of {limit} bytes"
    return ArtifactTooLarge(message, code="body_too_large")


async def _respond(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
