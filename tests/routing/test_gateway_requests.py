"""What the gateway answers itself, before routing: bounded bodies, the OIP path grammar."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from modelfleet.routing.directory import SiteDirectory
from modelfleet.routing.gateway import Gateway
from modelfleet.routing.router import Router


def _gateway(max_body_bytes: int = 10) -> Gateway:
    directory = SiteDirectory(
        sites=[{"name": "s", "url": "http://127.0.0.1:9", "labels": {"jurisdiction": "EU"}}]
    )
    return Gateway(Router(directory), default_region="EU", max_body_bytes=max_body_bytes)


def _call(
    gateway: Gateway, method: str, path: str, chunks: list[bytes], headers: list[Any]
) -> tuple[int, dict[str, Any]]:
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    asyncio.run(gateway(scope, receive, send))
    return sent[0]["status"], orjson.loads(sent[1]["body"])


def test_a_declared_oversized_body_is_refused_unread() -> None:
    status, doc = _call(
        _gateway(), "POST", "/v2/models/m/infer", [b"x" * 5], [(b"content-length", b"11")]
    )
    assert status == 413
    assert "exceeds 10 bytes" in doc["error"]


def test_a_chunked_body_is_counted_as_it_arrives() -> None:
    status, _ = _call(_gateway(), "POST", "/v2/models/m/infer", [b"x" * 6, b"x" * 6], [])
    assert status == 413


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/v2/models/m/stats", 404),
        ("GET", "/v2/models/m/", 404),
        ("GET", "/v2/models/m/versions/x", 404),
        ("GET", "/v2/models/m/infer", 405),
        ("POST", "/v2/models/m/ready", 405),
    ],
)
def test_paths_outside_the_grammar(method: str, path: str, status: int) -> None:
    assert _call(_gateway(), method, path, [b""], [])[0] == status
