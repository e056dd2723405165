"""The hub's OpenAPI document tells generated clients how to authenticate and what fails."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openapi_spec_validator

from tests.conftest import InProcessHub

ERROR_REF = {"$ref": "#/components/schemas/Error"}
OPEN_ROUTES = {("get", "/healthz"), ("get", "/api/v1/enroll/ca"), ("post", "/api/v1/enroll")}


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
    ]


def _error_answer(operation: dict[str, Any], status: str) -> bool:
    answer = operation["responses"].get(status)
    return answer is not None and answer["content"]["application/json"]["schema"] == ERROR_REF


def test_openapi_declares_security_schemes_and_error_answers(
    hub_factory: Callable[..., InProcessHub],
) -> None:
    hub = hub_factory()
    doc = hub.client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["siteCertificate"]["type"] == "mutualTLS"
    error = doc["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["required"] == ["code", "message"]

    secured = 0
    for method, path, operation in _operations(doc):
        # The hub answers bad input with 400 and its error body, never FastAPI's 422.
        assert "422" not in operation["responses"], (method, path)
        if "security" not in operation:
            continue
        secured += 1
        assert {"bearerAuth": []} in operation["security"], (method, path)
        assert {"siteCertificate": []} in operation["security"], (method, path)
        for status in ("401", "403"):
            assert _error_answer(operation, status), (method, path, status)
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
        if "{" in path:
            assert _error_answer(operation, "404"), (method, path)
        if method in {"post", "put", "patch", "delete"}:
            assert _error_answer(operation, "409"), (method, path)
    assert secured > 40  # every API route but the open ones
    for method, path in OPEN_ROUTES:
        assert "security" not in doc["paths"][path][method], (method, path)
    revoke = doc["paths"]["/api/v1/tokens/{token_id}"]["delete"]
    assert {"401", "403", "404", "409"} <= set(revoke["responses"])
    assert "security" not in doc["paths"]["/healthz"]["get"]


def test_the_declared_answers_are_what_the_hub_sends(
    hub_factory: Callable[..., InProcessHub],
) -> None:
    """What the document promises for DELETE /api/v1/tokens/{id}, the route does."""
    hub = hub_factory()
    viewer = hub.token("viewer")
    admin_id = next(t.id for t in hub.ctx.store.tokens.list() if t.role == "admin")
    url = f"/api/v1/tokens/{admin_id}"
    answers = {
        "401": hub.client.delete(url),
        "403": hub.client.delete(url, headers=hub.headers(viewer)),
        "404": hub.client.delete("/api/v1/tokens/none", headers=hub.headers()),
        "409": hub.client.delete(url, headers=hub.headers()),
        "400": hub.client.post("/api/v1/tokens", json={"role": 3}, headers=hub.headers()),
    }
    for status, response in answers.items():
        assert str(response.status_code) == status, (status, response.text)
        assert set(response.json()["error"]) == {"code", "message"}
    assert answers["401"].headers["www-authenticate"] == "Bearer"


def test_the_document_is_valid_openapi(hub_factory: Callable[..., InProcessHub]) -> None:
    openapi_spec_validator.validate(hub_factory().client.get("/openapi.json").json())
