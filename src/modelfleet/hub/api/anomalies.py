"""Anomaly endpoints (see ``hub/anomalies.py`` and ``monitoring/anomaly.py``).

- ``GET /api/v1/anomalies`` — anomalies per site x model, open ones and those that ended
  within ``since_s`` seconds (viewer and up: ``sites:read``).
- ``GET|PUT /api/v1/models/{name}/anomaly-settings`` — the detector's sensitivity for a
  model (operators write; audited).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from modelfleet.hub.anomalies import DEFAULT_SINCE_S, MAX_SINCE_S, Anomalies
from modelfleet.hub.api.deps import Caller, Context, audited, require
from modelfleet.hub.auth import Permission
from modelfleet.monitoring.anomaly import AnomalySettings
from modelfleet.refs import check_name

router = APIRouter(prefix="/api/v1", tags=["telemetry"])
#: The most anomalies one listing returns (newest kept).
MAX_LISTED = 1000

Name = Annotated[str | None, Query(min_length=1, max_length=255)]


class AnomalyOut(BaseModel):
    site: str
    model: str
    version: int
    metric: str = Field(
        description="request_rate | error_rate | p99 | output_<col> | stuck:<f> | missing:<f>"
    )
    start: datetime
    end: datetime | None = Field(description="None while open")
    detected_at: datetime
    observed: float
    expected: float
    score: float
    severity: Literal["warning", "critical"]
    open: bool


class AnomalyList(BaseModel):
    since_s: float
    open: int
    truncated: bool
    passed_at: datetime | None = Field(
        description="When the detector's last pass ended; null until its first pass since "
        "the hub started has finished (the list is empty until then)."
    )
    anomalies: list[AnomalyOut]


class AnomalySettingsOut(BaseModel):
    model: str
    settings: AnomalySettings


def _service(ctx: Context) -> Anomalies:
    service: Anomalies = ctx.anomalies
    return service


@router.get("/anomalies", response_model=AnomalyList, summary="Anomalies per site x model")
async def list_anomalies(
    ctx: Context,
    caller: Caller,
    site: Name = None,
    model: Name = None,
    open_only: bool = False,
    since_s: Annotated[float, Query(ge=60, le=MAX_SINCE_S)] = DEFAULT_SINCE_S,
) -> dict[str, Any]:
    caller.require(Permission.SITES_READ)
    for value, what in ((site, "site name"), (model, "model name")):
        if value is not None:
            check_name(value, what)
    found = await run_in_threadpool(
        _service(ctx).find, site=site, model=model, open_only=open_only, since_s=since_s
    )
    passed = _service(ctx).passed_at
    return {
        "since_s": since_s,
        "passed_at": None if passed is None else datetime.fromtimestamp(passed, UTC),
        "open": sum(1 for a in found if a.open),
        "truncated": len(found) > MAX_LISTED,
        "anomalies": [a.as_dict() for a in found[-MAX_LISTED:]],
    }


@router.get(
    "/models/{name}/anomaly-settings",
    response_model=AnomalySettingsOut,
    summary="Anomaly detector settings in force for a model",
)
async def get_settings(name: str, ctx: Context, caller: Caller) -> dict[str, Any]:
    caller.require(Permission.MODELS_READ)
    check_name(name, "model name")
    ctx.registry.model(name)  # an unknown model is a 404, not the defaults
    settings = await run_in_threadpool(_service(ctx).settings, name)
    return {"model": name, "settings": settings}


@router.put(
    "/models/{name}/anomaly-settings",
    response_model=AnomalySettingsOut,
    summary="Override anomaly detector settings for a model (the rest keep their values)",
)
async def put_settings(
    name: str, body: dict[str, Any], ctx: Context, caller: Caller
) -> dict[str, Any]:
    require(ctx, caller, Permission.MODELS_WRITE, "model.anomaly_settings", name)
    with audited(ctx, caller, "model.anomaly_settings", name) as detail:
        settings = await run_in_threadpool(_service(ctx).set_settings, name, body)
        detail.append(",".join(f"{k}={v}" for k, v in sorted(body.items())[:10])[:200])
    return {"model": name, "settings": settings}
