"""The anomalies page: what the hub's detector (hub/anomalies.py) found per site x model,
open ones first (JSON twin: ``/api/v1/anomalies``)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from modelfleet.hub.dashboard.render import UiContext, UiSession, render

router = APIRouter(include_in_schema=False)

#: The look-back choices the page offers (seconds), as the CLI's ``--since`` takes them.
RANGES = {"1h": 3600.0, "6h": 6 * 3600.0, "24h": 86400.0, "7d": 7 * 86400.0}


@router.get("/ui/anomalies")
def anomalies_page(
    request: Request,
    ctx: UiContext,
    signed_in: UiSession,
    site: Annotated[str | None, Query(max_length=128)] = None,
    model: Annotated[str | None, Query(max_length=128)] = None,
    range_: Annotated[str, Query(alias="range", pattern="^(1h|6h|24h|7d)$")] = "24h",
    open_only: Annotated[bool, Query(alias="open")] = False,
) -> HTMLResponse:
    found = ctx.anomalies.find(
        site=site or None, model=model or None, open_only=open_only, since_s=RANGES[range_]
    )
    rows = sorted(found, key=lambda a: (not a.open, -a.start.timestamp()))
    params: dict[str, str] = {"since_s": str(int(RANGES[range_]))}
    if site:
        params["site"] = site
    if model:
        params["model"] = model
    if open_only:
        params["open_only"] = "true"
    twin = "/api/v1/anomalies?" + urlencode(params)
    return render(
        request,
        "anomalies.html",
        signed_in,
        title="Anomalies",
        json_twin=twin,
        anomalies=rows,
        open_count=sum(1 for a in rows if a.open),
        site=site or "",
        model=model or "",
        range=range_,
        ranges=list(RANGES),
        open_only=open_only,
    )
