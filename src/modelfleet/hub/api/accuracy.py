"""Ground-truth accuracy endpoint (see ``hub/accuracy.py`` and docs/feedback.md).

- ``GET /api/v1/accuracy?model=M[&site=S][&version=V][&since=T][&bucket_s=B]`` — per
  site x version: accuracy (classifiers) or MAE (regressors) over the labels the sites
  joined since ``since`` (default: the last 7 days), the labels behind it, the labels the
  sites dropped by reason, and a series per bucket for charts (viewer and up:
  ``models:read``). An unknown model is a 404.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from modelfleet.errors import InvalidInput
from modelfleet.hub.accuracy import LATEST_S, Accuracy
from modelfleet.hub.api.deps import Caller, Context, VersionQuery
from modelfleet.hub.auth import Permission
from modelfleet.hub.telemetry import Telemetry
from modelfleet.refs import check_name

router = APIRouter(prefix="/api/v1", tags=["telemetry"])

Name = Annotated[str, Query(min_length=1, max_length=255)]
OptionalName = Annotated[str | None, Query(min_length=1, max_length=255)]


class FigureOut(BaseModel):
    site: str
    version: int
    metric: str = Field(description="accuracy (classifiers) | mae (regressors)")
    value: float | None = Field(description="None when no label was joined (only drops)")
    count: int = Field(description="Labels joined with a prediction")
    dropped: dict[str, int] = Field(
        description="Labels not counted, by reason: unknown_id, expired, duplicate, bad_label"
    )


class PointOut(BaseModel):
    site: str
    version: int
    metric: str
    at: datetime = Field(description="Start of the bucket (by the windows' end)")
    value: float
    count: int


class AccuracyOut(BaseModel):
    model: str
    since: datetime
    bucket_s: float
    figures: list[FigureOut]
    series: list[PointOut]


def _service(ctx: Context) -> Accuracy:
    telemetry: Telemetry = ctx.telemetry
    return telemetry.accuracy


def _report(
    ctx: Context,
    model: str,
    site: str | None,
    version: int | None,
    since: datetime,
    bucket_s: float,
) -> dict[str, Any]:
    check_name(model, "model name")
    if site is not None:
        check_name(site, "site name")
    ctx.registry.model(model)  # NotFound (404) for a model the registry does not hold
    service = _service(ctx)
    figures = [
        {**vars(figure), "value": figure.value if figure.count else None, "dropped": dropped}
        for figure, dropped in service.figures(model, site=site, version=version, since=since)
    ]
    series = service.series(model, site=site, version=version, since=since, bucket_s=bucket_s)
    return {
        "model": model,
        "since": since,
        "bucket_s": bucket_s,
        "figures": figures,
        "series": [vars(p) for p in series],
    }


@router.get(
    "/accuracy",
    response_model=AccuracyOut,
    summary="Accuracy (or MAE) from sites' labels per site x version, and its series",
)
async def get_accuracy(
    ctx: Context,
    caller: Caller,
    model: Name,
    site: OptionalName = None,
    version: VersionQuery = None,
    since: datetime | None = None,
    bucket_s: Annotated[float, Query(ge=1, le=30 * 86_400.0)] = 3600.0,
) -> dict[str, Any]:
    caller.require(Permission.MODELS_READ)
    now = datetime.now(UTC)
    if since is None:
        since = now - timedelta(seconds=LATEST_S)
    elif since.tzinfo is None:
        raise InvalidInput("since must carry a time zone (e.g. 2026-01-01T00:00:00Z)")
    result: dict[str, Any] = await run_in_threadpool(
        _report, ctx, model, site, version, since, bucket_s
    )
    return result
