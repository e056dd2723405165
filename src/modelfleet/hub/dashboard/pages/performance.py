"""The performance page: one model's request rate, error rate and latency percentiles per
site over 1 h / 24 h / 7 d, sites side by side (JSON twin: ``/api/v1/telemetry/series``).

One chart per metric with one line per site, and a table of each site's figures: the
requests and errors over the range, and the rate, error rate and percentiles of its latest
bucket with traffic. Under them, accuracy (or MAE) from the labels sites joined with their
predictions, one line per site x version (``hub/accuracy.py``; JSON twin
``/api/v1/accuracy``). Everything else comes from :class:`~modelfleet.hub.timeseries.TimeSeries`,
the same service the JSON twin answers from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from modelfleet.hub.dashboard.render import UiContext, UiSession, render
from modelfleet.hub.timeseries import RANGES, Bucket, Series, SeriesSet

router = APIRouter(include_in_schema=False)

#: Sites one page may select by name (every site when none is named).
MAX_SITES = 100
#: (key, chart title, unit of the dashboard's chart glue, bucket attribute).
METRICS = (
    ("rate", "Requests per second", "", "requests_per_s"),
    ("errors", "Error rate", "ratio", "error_rate"),
    ("p50", "Latency p50", "s", "p50_s"),
    ("p95", "Latency p95", "s", "p95_s"),
    ("p99", "Latency p99", "s", "p99_s"),
)


@dataclass(frozen=True)
class SiteRow:
    """One site's line of the table: totals over the range, figures of its last bucket."""

    site: str
    requests: int
    errors: int
    latest: Bucket | None


def _latest(series: Series) -> Bucket | None:
    for bucket in reversed(series.buckets):
        if bucket.requests:
            return bucket
    return None


def _chart(found: SeriesSet, attribute: str, unit: str) -> dict[str, Any]:
    x = [b.start.timestamp() for b in found.series[0].buckets] if found.series else []
    return {
        "x": x,
        "unit": unit,
        "series": [
            {"label": s.site or "all sites", "values": [getattr(b, attribute) for b in s.buckets]}
            for s in found.series
        ],
    }


def _accuracy(
    ctx: UiContext, model: str, range_name: str, sites: list[str] | None
) -> dict[str, Any]:
    """The chart of accuracy (or MAE) from the sites' labels, one line per site x version
    (docs/feedback.md), and the figures over the range for the table under it."""
    span, bucket = RANGES[range_name]
    since = datetime.now(UTC) - timedelta(seconds=span)
    service = ctx.telemetry.accuracy
    points = [
        p
        for p in service.series(model, since=since, bucket_s=bucket)
        if not sites or p.site in sites
    ]
    figures = [
        f
        for f, _ in service.figures(model, since=since)
        if f.count and (not sites or f.site in sites)
    ]
    first = since.timestamp() // bucket * bucket
    x = [first + i * bucket for i in range(int(span // bucket) + 1)]
    lines: dict[tuple[str, int], list[float | None]] = {}
    for p in points:
        values = lines.setdefault((p.site, p.version), [None] * len(x))
        index = int((p.at.timestamp() - first) // bucket)
        if 0 <= index < len(x):
            values[index] = p.value
    metric = figures[0].metric if figures else "accuracy"
    doc = {
        "x": x,
        "unit": "ratio" if metric == "accuracy" else "",
        "series": [
            {"label": f"{site} v{version}", "values": values}
            for (site, version), values in sorted(lines.items())
        ],
    }
    title = "Accuracy from labels" if metric == "accuracy" else "Mean absolute error from labels"
    return {"id": "chart-accuracy", "title": title, "doc": doc, "figures": figures}


def _models_with_traffic(ctx: UiContext) -> tuple[list[str], str | None]:
    names = [m.name for m in ctx.store.models.list_models()]
    busy = sorted({t.model for t in ctx.store.telemetry.totals() if t.requests})
    return names, (busy[0] if busy else (names[0] if names else None))


@router.get("/ui/performance")
async def performance_page(
    request: Request,
    ctx: UiContext,
    signed_in: UiSession,
    model: Annotated[str | None, Query(max_length=255)] = None,
    site: Annotated[list[str] | None, Query(max_length=MAX_SITES)] = None,
    range: Annotated[str, Query(max_length=8)] = "1h",
) -> HTMLResponse:
    names, default = await run_in_threadpool(_models_with_traffic, ctx)
    chosen = model or default
    values: dict[str, Any] = {
        "models": names,
        "model": chosen,
        "ranges": list(RANGES),
        "range": range,
        "all_sites": [s.name for s in await run_in_threadpool(ctx.sites.list)],
        "selected": site or [],
        "error": "",
    }
    twin_query = {"model": chosen or "", "range": range}
    json_twin = "/api/v1/telemetry/series?" + urlencode(
        [*twin_query.items(), *(("site", s) for s in site or [])]
    )

    def page(status: int, **more: Any) -> HTMLResponse:
        return render(
            request,
            "performance.html",
            signed_in,
            title="Performance",
            json_twin=json_twin if chosen else None,
            status_code=status,
            **{**values, **more},
        )

    if range not in RANGES:
        return page(400, error=f"unknown range {range!r}: choose 1h, 24h or 7d", charts=[])
    if chosen is None:
        return page(200, charts=[], rows=[], found=None)
    if chosen not in names:
        return page(404, error=f"model {chosen!r} does not exist", charts=[], rows=[])
    found = await run_in_threadpool(
        lambda: ctx.timeseries.over_range(chosen, range, sites=site or None, group_by="site")
    )
    charts = [
        {"id": f"chart-{key}", "title": title, "doc": _chart(found, attribute, unit)}
        for key, title, unit, attribute in METRICS
    ]
    by_site = {s.site: s for s in found.series}
    shown = site or sorted({*values["all_sites"], *(s for s in by_site if s)})
    rows = [
        SiteRow(name, by_site[name].requests, by_site[name].errors, _latest(by_site[name]))
        if name in by_site
        else SiteRow(name, 0, 0, None)
        for name in shown
    ]
    accuracy = await run_in_threadpool(_accuracy, ctx, chosen, range, site)
    return page(200, charts=charts, rows=rows, found=found, accuracy=accuracy)
