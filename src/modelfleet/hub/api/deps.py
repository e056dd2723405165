"""Request-scoped dependencies: the hub context, the caller, the audit trail."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query, Request

from modelfleet.errors import ModelfleetError, PermissionDenied, Unauthenticated
from modelfleet.hub.auth import (
    Permission,
    Principal,
    Role,
    authenticate,
    site_principal,
)
from modelfleet.hub.context import HubContext
from modelfleet.hub.dashboard import session
from modelfleet.pki.tls import PEER_EXTENSION, Peer


def get_context(request: Request) -> HubContext:
    ctx: HubContext = request.app.state.hub
    return ctx


Context = Annotated[HubContext, Depends(get_context)]

#: The largest version or round number a path or query may name: what the store's integer
#: columns hold. Bounded here so the OpenAPI document tells clients, and a number beyond
#: it is a 422 (shown as 400 by the hub's error handler) instead of a database overflow.
MAX_NUMBER = 2**31 - 1
VersionPath = Annotated[int, Path(ge=1, le=MAX_NUMBER, description="Version number.")]
RoundPath = Annotated[int, Path(ge=1, le=MAX_NUMBER, description="Round number.")]
VersionQuery = Annotated[int | None, Query(ge=1, le=MAX_NUMBER, description="Version number.")]


def get_principal(
    request: Request,
    ctx: Context,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    """A site's verified client certificate (mTLS), a bearer token, or a dashboard session
    cookie (unsafe methods then need its CSRF token); 401 otherwise."""
    peer = (request.scope.get("extensions") or {}).get(PEER_EXTENSION)
    if isinstance(peer, Peer):
        site = ctx.sites.certificates.check(peer.identity, peer.serial)
        if site is not None:
            return site_principal(site, peer.serial)
    address = client_address(request.scope)
    if authorization is None and session.COOKIE in request.cookies:
        # A dashboard page (hub/dashboard): the same API, signed in by cookie.
        found = session.resolve(ctx, request.cookies[session.COOKIE])
        if found is None:  # a forged cookie fails its HMAC before any lookup: no limiter
            raise Unauthenticated("the dashboard session has ended: sign in again at /ui/login")
        session.check_unsafe(ctx, found, request.method, request.headers, request.url.scheme)
        return found.principal
    ctx.limiter.check(address, authorization)
    try:
        principal = authenticate(ctx.store, authorization)
    except Unauthenticated:
        ctx.limiter.failed(address)
        raise
    ctx.limiter.vouch(authorization)
    return principal


def client_address(scope: Mapping[str, Any]) -> str | None:
    """The TCP peer's address, what failed authentications are limited by."""
    client = scope.get("client")
    return str(client[0]) if client else None


Caller = Annotated[Principal, Depends(get_principal)]


def require(
    ctx: HubContext, caller: Principal, permission: Permission, action: str, obj: str
) -> None:
    """Check a permission; a refusal of a known caller is audited before it is raised."""
    if not caller.can(permission):
        ctx.store.audit.record(actor=caller.actor, action=action, object=obj, outcome="forbidden")
        caller.require(permission)


def require_site(ctx: HubContext, caller: Principal, site: str, action: str, what: str) -> None:
    """Only the site's own credential may ``what`` (not even an admin acts as a site);
    a refusal is audited before it is raised."""
    if caller.role != Role.SITE or caller.site != site:
        ctx.store.audit.record(actor=caller.actor, action=action, object=site, outcome="forbidden")
        raise PermissionDenied(f"only the site {site!r} itself may {what}")


@contextmanager
def audited(ctx: HubContext, caller: Principal, action: str, obj: str) -> Iterator[list[str]]:
    """Record a mutating call's outcome; append to the yielded list to add detail."""
    detail: list[str] = []
    try:
        yield detail
    except ModelfleetError as exc:
        ctx.store.audit.record(
            actor=caller.actor, action=action, object=obj, outcome=exc.code, detail=exc.message
        )
        raise
    except Exception as exc:
        ctx.store.audit.record(
            actor=caller.actor, action=action, object=obj, outcome="internal", detail=repr(exc)
        )
        raise
    ctx.store.audit.record(
        actor=caller.actor, action=action, object=obj, outcome="ok", detail="; ".join(detail)
    )
