"""The hub's OpenAPI document: its security schemes and the errors every route can answer.

FastAPI documents a route's success answer and a 422 it never sends (the hub answers 400,
see :mod:`modelfleet.hub.api.errors`). Generated clients need the rest: which routes take a
credential, and that they answer 401/403 (and 404/409 where those can happen) with the one
error body. Both are derived from the routes themselves, so a new route is documented
right without anyone remembering to: a route that depends on the caller
(:func:`modelfleet.hub.api.deps.get_principal`) needs a credential.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from modelfleet.hub.api.deps import get_principal

ERROR_REF = {"$ref": "#/components/schemas/Error"}

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "description": "Every failure the hub answers, whatever the status.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {
                    "type": "string",
                    "description": "Stable, machine-readable: invalid_input, unauthenticated, "
                    "forbidden, not_found, conflict, ...",
                    "examples": ["unauthenticated"],
                },
                "message": {"type": "string", "description": "For humans; says what to do."},
            },
        }
    },
}

SECURITY_SCHEMES: dict[str, Any] = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (`modelfleet token create`; roles admin, operator, "
        "viewer, or a site's own credential). Tokens expire; a revoked or expired one gets "
        "401.",
    },
    "siteCertificate": {
        "type": "mutualTLS",
        "description": "A site's client certificate from the fleet CA, issued at enrollment "
        "and renewed by the agent: identifies the site on the site routes.",
    },
}

#: Either credential: a bearer token, or a site's client certificate.
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"siteCertificate": []}]

_MUTATING = {"post", "put", "patch", "delete"}

_RESPONSES: dict[str, str] = {
    "400": "Invalid input: a malformed body, parameter or value (the message names it).",
    "401": "No credential, or an unknown, revoked or expired token.",
    "403": "The credential is valid but its role (or its site) may not do this.",
    "404": "Something the request names does not exist.",
    "409": "Conflicts with the current state (exists already, in use, the last admin "
    "token, a rollout in the way...).",
}


def _needs_caller(dependant: Dependant) -> bool:
    return any(dep.call is get_principal or _needs_caller(dep) for dep in dependant.dependencies)


def _error(status: str) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": _RESPONSES[status],
        "content": {"application/json": {"schema": ERROR_REF}},
    }
    if status == "401":
        answer["headers"] = {
            "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}
        }
    return answer


def _document(operation: dict[str, Any], method: str, route: APIRoute) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    statuses = ["400"] if responses.pop("422", None) is not None else []
    if _needs_caller(route.dependant):
        operation["security"] = SECURITY
        statuses += ["401", "403"]
    if "{" in route.path_format or method in _MUTATING:
        statuses.append("404")
    if method in _MUTATING:
        statuses += ["400", "409"]
    for status in statuses:
        responses.setdefault(status, _error(status))


def hub_openapi(app: FastAPI, routes: list[APIRoute]) -> dict[str, Any]:
    """The document ``/openapi.json`` serves; ``routes``: every API route of ``app``,
    matched to its operation by operation id."""
    schema = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for unused in ("HTTPValidationError", "ValidationError"):  # the hub answers 400 instead
        components["schemas"].pop(unused, None)
    components["securitySchemes"] = SECURITY_SCHEMES
    by_id = {route.unique_id: route for route in routes if route.include_in_schema}
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            route = by_id.get(operation.get("operationId", ""))
            if route is not None:
                _document(operation, method, route)
    return schema


class HubApp(FastAPI):
    """FastAPI with the hub's OpenAPI document (see :func:`hub_openapi`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._api_routers: list[APIRouter] = []

    def include_router(self, router: APIRouter, **kwargs: Any) -> None:
        """As FastAPI's, remembering the router: its routes are what the document
        describes (the app's own list holds them behind internal wrappers)."""
        super().include_router(router, **kwargs)
        self._api_routers.append(router)

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            routes = [r for r in self.routes if isinstance(r, APIRoute)]
            for router in self._api_routers:
                routes += [r for r in router.routes if isinstance(r, APIRoute)]
            self.openapi_schema = hub_openapi(self, routes)
        return self.openapi_schema
