"""Mounts the dashboard on the hub's app: sign-in and sign-out, static files, every page."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from modelfleet.errors import RateLimited, Unauthenticated
from modelfleet.hub.api.deps import client_address
from modelfleet.hub.auth import authenticate
from modelfleet.hub.dashboard import session
from modelfleet.hub.dashboard.pages import (
    anomalies,
    audit,
    drift,
    federated,
    fleet,
    models,
    performance,
    rollouts,
)
from modelfleet.hub.dashboard.render import (
    STATIC,
    SignInRequired,
    UiContext,
    render,
    with_security_headers,
)

#: The longest token the sign-in form reads (a real one is 46 characters).
MAX_TOKEN_CHARS = 256

router = APIRouter(include_in_schema=False)


def _safe_next(value: str | None) -> str:
    """Where to go after sign-in: only a path of this dashboard (no open redirect)."""
    if not value:
        return "/ui/fleet"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui/") or "\\" in value:
        return "/ui/fleet"
    return value


@router.get("/ui")
@router.get("/ui/")
def home() -> Response:
    return RedirectResponse("/ui/fleet", status_code=303, headers=with_security_headers())


@router.get("/ui/login")
def login_form(request: Request, next: str | None = None) -> Response:
    return render(request, "login.html", None, title="Sign in", next=_safe_next(next), error="")


@router.post("/ui/login")
def login(
    request: Request,
    ctx: UiContext,
    token: Annotated[str, Form(max_length=MAX_TOKEN_CHARS)],
    next: Annotated[str, Form(max_length=2048)] = "/ui/fleet",
) -> Response:
    target = _safe_next(next)
    if not session.same_origin(request.headers, request.url.scheme, request.headers.get("host")):
        return render(
            request,
            "login.html",
            None,
            title="Sign in",
            next=target,
            error="cross-origin sign-in refused",
            status_code=403,
        )
    address = client_address(request.scope)
    bearer = f"Bearer {token.strip()}"
    try:
        ctx.limiter.check(address, bearer)
        principal = authenticate(ctx.store, bearer)
        session.check_ui_role(principal)
    except (Unauthenticated, RateLimited) as exc:
        if isinstance(exc, Unauthenticated) and ctx.limiter.failed(address):
            ctx.store.audit.record(
                actor="anonymous", action="ui.sign_in", object="dashboard", outcome=exc.code
            )
        return render(
            request,
            "login.html",
            None,
            title="Sign in",
            next=target,
            error=exc.message,
            status_code=exc.status,
        )
    ctx.limiter.vouch(bearer)
    record = ctx.store.tokens.get(principal.token_id)
    cookie, max_age = session.issue(ctx, principal, record.expires_at if record else None)
    ctx.store.audit.record(
        actor=principal.actor, action="ui.sign_in", object="dashboard", outcome="ok"
    )
    response = RedirectResponse(target, status_code=303, headers=with_security_headers())
    response.set_cookie(
        session.COOKIE,
        cookie,
        max_age=max_age,
        httponly=True,
        secure=request.url.scheme == "https",
        samesite="strict",
        path="/",
    )
    return response


@router.post("/ui/logout")
def logout(
    request: Request,
    ctx: UiContext,
    csrf: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    found = session.resolve(ctx, request.cookies.get(session.COOKIE))
    if found is not None and csrf == found.csrf:
        ctx.store.audit.record(
            actor=found.principal.actor, action="ui.sign_out", object="dashboard", outcome="ok"
        )
    response = RedirectResponse("/ui/login", status_code=303, headers=with_security_headers())
    response.delete_cookie(session.COOKIE, path="/", httponly=True, samesite="strict")
    return response


def install_dashboard(app: FastAPI) -> None:
    """Add the dashboard to the hub's app (same process, same port, same TLS)."""

    @app.exception_handler(SignInRequired)
    async def _sign_in(_: Request, exc: SignInRequired) -> Response:
        from urllib.parse import quote

        return RedirectResponse(
            f"/ui/login?next={quote(exc.next_path, safe='/')}",
            status_code=303,
            headers=with_security_headers(),
        )

    app.include_router(router)
    for page in (fleet, models, rollouts, performance, drift, anomalies, federated, audit):
        app.include_router(page.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
