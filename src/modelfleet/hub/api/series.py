"""``GET /api/v1/telemetry/series``: one model's requests, errors and latency over time, per
site (the performance page's JSON twin; see :mod:`modelfleet.hub.timeseries`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from modelfleet.api.series import SeriesReport
from modelfleet.hub.api.deps import Caller, Context, VersionQuery
from modelfleet.hub.auth import Permission
from modelfleet.hub.timeseries import SeriesSet

router = APIRouter(prefix="/api/v1", tags=["telemetry"])

#: Sites one request may name (beyond it: every site, by leaving ``site`` out).
MAX_SITES = 100


@router.get(
    "/telemetry/series",
    response_model=SeriesReport,
    summary="A model's requests, errors and p50/p95/p99 over 1 h, 24 h or 7 d, per site",
)
async def series(
    ctx: Context,
    caller: Caller,
    model: Annotated[str, Query(min_length=1, max_length=255, description="Model name.")],
    range: Annotated[
        Literal["1h", "24h", "7d"], Query(description="How far back: 1h, 24h or 7d.")
    ] = "1h",
    site: Annotated[
        list[str] | None,
        Query(max_length=MAX_SITES, description="Only these sites (repeat; default all)."),
    ] = None,
    version: VersionQuery = None,
    by: Annotated[
        Literal["site", "site_version"],
        Query(description="One series per site (versions merged) or per site x version."),
    ] = "site",
) -> SeriesReport:
    caller.require(Permission.SITES_READ)
    await run_in_threadpool(ctx.registry.model, model)  # 404 for a model that does not exist
    found: SeriesSet = await run_in_threadpool(
        lambda: ctx.timeseries.over_range(model, range, sites=site, version=version, group_by=by)
    )
    return SeriesReport.model_validate(asdict(found))
