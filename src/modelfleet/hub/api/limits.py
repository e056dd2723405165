"""A cap on request bodies, so no caller can make the hub buffer an unbounded body.

Model uploads stream to disk under their own limit (``max_artifact_bytes``) and are exempt;
every other body (JSON documents, telemetry batches, federated updates) is capped at
``max_body_bytes`` and refused with 413 in the hub's error format. A site's heartbeat and
an enrollment are small by nature and sent often or anonymously: they are capped at
:data:`SMALL_BODY_BYTES`.
"""

from __future__ import annotations

import re

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_UPLOAD = re.compile(r"^/api/v1/models/[^/]+/versions$")
_SMALL = re.compile(r"^/api/v1/(sites/[^/]+/report|enroll)$")
SMALL_BODY_BYTES = 256 * 1024


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _UPLOAD.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        if _SMALL.fullmatch(scope["path"]):
            limit = min(limit, SMALL_BODY_BYTES)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _too_large(send, limit)
                return
        seen = 0
        answered = False

        async def guarded_receive() -> Message:
            nonlocal seen, answered
            message = await receive()
            if message["type"] == "http.request" and not answered:
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Answer now; the app sees a disconnect and whatever it sends is dropped.
                    answered = True
                    await _too_large(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not answered:
                await send(message)

        await self.app(scope, guarded_receive, guarded_send)


async def _too_large(send: Send, limit: int) -> None:
    body = orjson.dumps(
        {
            "error": {
                "code": "body_too_large",
                "message": f"request body exceeds the hub's limit of {limit} bytes",
            }
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
