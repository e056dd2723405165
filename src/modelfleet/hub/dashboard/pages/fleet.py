"""The fleet page: every site at a glance (JSON twin: ``/api/v1/telemetry/status``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from modelfleet.hub.dashboard.render import UiContext, UiSession, render

router = APIRouter(include_in_schema=False)


@router.get("/ui/fleet")
def fleet_page(request: Request, ctx: UiContext, signed_in: UiSession) -> HTMLResponse:
    status = ctx.telemetry.status()
    return render(
        request,
        "fleet.html",
        signed_in,
        title="Fleet",
        json_twin="/api/v1/telemetry/status",
        sites=status["sites"],
    )
