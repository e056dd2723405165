"""The federated page (being built)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from modelfleet.hub.dashboard.render import UiSession, render

router = APIRouter(include_in_schema=False)


@router.get("/ui/federated")
def federated_page(request: Request, signed_in: UiSession) -> HTMLResponse:
    return render(request, "placeholder.html", signed_in, title="Federated")
