"""Rendering the dashboard's pages: one Jinja environment, the signed-in viewer, the
headers every page carries.

Every page is a server-rendered template over the same services the JSON API calls, and
links its JSON twin (the API resource that holds the same figures). Pages hold no inline
script or style: the Content-Security-Policy below allows only the hub's own files, so a
value that reaches a page (a site name, a label, an audit detail) can never run.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from modelfleet._version import __version__
from modelfleet.hub.api.deps import get_context
from modelfleet.hub.auth import Permission, Principal
from modelfleet.hub.context import HubContext
from modelfleet.hub.dashboard import session

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

#: The dashboard's navigation: (path, label). Every page is linkable.
NAV = (
    ("/ui/fleet", "Fleet"),
    ("/ui/models", "Models"),
    ("/ui/rollouts", "Rollouts"),
    ("/ui/performance", "Performance"),
    ("/ui/drift", "Drift"),
    ("/ui/anomalies", "Anomalies"),
    ("/ui/federated", "Federated"),
    ("/ui/audit", "Audit"),
)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" makes Chromium send Origin: null
    "Cache-Control": "no-store",
}


class SignInRequired(Exception):
    """Raised by :func:`ui_session` for a browser with no live session; the dashboard's
    handler answers with a redirect to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def ago(value: datetime | str | None, now: datetime | None = None) -> str:
    """'12 s ago', '3 min ago', '2 h ago', '4 d ago'; '—' for never."""
    if value is None:
        return "—"
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = max(0.0, ((now or datetime.now(UTC)) - when).total_seconds())
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def percent(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f} %"


def millis(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    ms = seconds * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.0f} ms"


def number(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(("html",)),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(ago=ago, percent=percent, millis=millis, number=number)
    env.filters["urlpart"] = lambda v: quote(str(v), safe="")
    env.globals.update(nav=NAV, modelfleet_version=__version__)
    return env


ENV = _environment()


def ui_session(
    request: Request, ctx: Annotated[HubContext, Depends(get_context)]
) -> session.Session:
    """The signed-in browser's session; a redirect to sign in when there is none."""
    found = session.resolve(ctx, request.cookies.get(session.COOKIE))
    if found is None:
        path = request.url.path
        if request.url.query:
            path += "?" + request.url.query
        raise SignInRequired(path)
    return found


UiSession = Annotated[session.Session, Depends(ui_session)]
UiContext = Annotated[HubContext, Depends(get_context)]


def can_act(principal: Principal) -> bool:
    """May this viewer press the rollout buttons (pause, resume, promote, abort, ...)?"""
    return principal.can(Permission.DEPLOY_WRITE)


def render(
    request: Request,
    template: str,
    signed_in: session.Session | None,
    *,
    title: str,
    json_twin: str | None = None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """One page: ``template`` under ``base.html`` with the viewer, CSRF token and nav.

    ``json_twin`` is the API path that holds the same figures as JSON (linked on the page).
    """
    values: dict[str, Any] = {
        "request_path": request.url.path,
        "title": title,
        "json_twin": json_twin,
        "principal": signed_in.principal if signed_in else None,
        "csrf": signed_in.csrf if signed_in else "",
        "can_act": can_act(signed_in.principal) if signed_in else False,
        **context,
    }
    html = ENV.get_template(template).render(values)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def fragment(template: str, **context: Any) -> str:
    """A template rendered alone (an htmx swap or a server-sent event's HTML)."""
    return ENV.get_template(template).render(context)


def with_security_headers(headers: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**SECURITY_HEADERS, **(headers or {})}
