"""/api/v1/fleet: the fleet overview one page at a time (the dashboard's fleet page too).

``Telemetry.status()`` builds every site's row and compares drift per site x model on each
call; with 1,000 sites that is 1,000 desired-vs-reported reads and a drift comparison per
site with telemetry. This view selects and orders the sites from one read of the site
table, then builds only the rows of the page asked for (desired vs reported, rates, drift).
The cards over the whole selection come from the same single reads: the site table
(online/offline per region), the recent windows (rates, without their sketches) and the
lifetime totals (which site x version has data in its drift window); drift verdicts come
from :meth:`Telemetry.drift_summary`, cached by the telemetry service for 10 s.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from modelfleet.api.fleet import FleetModel, FleetPage, FleetRegion, FleetSite, FleetSummary
from modelfleet.hub.api.deps import Caller, Context
from modelfleet.hub.auth import Permission
from modelfleet.hub.context import HubContext
from modelfleet.hub.selectors import parse_selector
from modelfleet.hub.store.records import SiteRecord, Totals, WindowRecord
from modelfleet.hub.telemetry import PERCENTILES, RECENT_S
from modelfleet.monitoring.histograms import (
    LATENCY_BOUNDS,
    dense,
    histogram_quantile,
    merge_counts,
)

router = APIRouter(prefix="/api/v1", tags=["telemetry"])

#: The largest page of sites (the dashboard shows 50).
MAX_PER_PAGE = 200
DEFAULT_PER_PAGE = 50
#: The deepest page (1,000,000 sites at 1 a page).
MAX_PAGE = 1_000_000
MAX_SELECTOR_CHARS = 1024
NO_REGION = "(none)"


@dataclass
class _Recent:
    """Recent traffic of one key (site x model, or the whole selection): counts at once,
    the latency histogram only when a row shown asks for its p99 (merging 1,000 sites'
    histograms for rows nobody sees was a third of the page's time)."""

    requests: int = 0
    errors: int = 0
    start: datetime | None = None
    windows: list[WindowRecord] = field(default_factory=list)

    def add(self, window: WindowRecord, *, keep: bool = True) -> None:
        self.requests += window.requests
        self.errors += window.errors
        self.start = window.start_at if self.start is None else min(self.start, window.start_at)
        if keep:
            self.windows.append(window)

    def rate(self, now: datetime) -> float:
        """Requests per second, over the recent span (as ``Telemetry.status`` counts it)."""
        if not self.requests or self.start is None:
            return 0.0
        span = max(1e-3, min(RECENT_S, (now - self.start).total_seconds()))
        return round(self.requests / span, 3)

    def error_rate(self) -> float | None:
        return round(self.errors / self.requests, 6) if self.requests else None

    def latency(self) -> list[int]:
        counts = [0] * (len(LATENCY_BOUNDS) + 1)
        for window in self.windows:
            merge_counts(counts, dense(window.latency, len(LATENCY_BOUNDS) + 1))
        return counts


def _p99(counts: list[int]) -> float | None:
    value = histogram_quantile(counts, dict(PERCENTILES)["p99"], LATENCY_BOUNDS)
    return None if value is None else round(value, 6)


def _region(site: SiteRecord) -> str:
    return site.labels.get("region") or NO_REGION


def _drift_keys(
    ctx: HubContext, totals: list[Totals], names: set[str], now: datetime
) -> dict[str, list[tuple[str, int]]]:
    """Per site: the (model, version) with a window in that model's drift window."""
    windows: dict[str, float] = {}
    keys: dict[str, list[tuple[str, int]]] = {}
    for total in totals:
        if total.site not in names:
            continue
        if total.model not in windows:
            windows[total.model] = ctx.telemetry.thresholds(total.model)["window_s"]
        if total.last_end >= now - timedelta(seconds=windows[total.model]):
            keys.setdefault(total.site, []).append((total.model, total.version))
    return keys


def _drift_of(ctx: HubContext, site: str, keys: Iterable[tuple[str, int]]) -> dict[str, Any]:
    """Per model at one site: ``(drift, drifted)`` merged over its versions with data."""
    found: dict[str, Any] = {}
    for model, version in keys:
        summary = ctx.telemetry.drift_summary(site, model, version)
        verdict, drifted = found.get(model, (None, []))
        if summary["drift"] is not None:
            verdict = bool(verdict) or bool(summary["drift"])
        found[model] = (verdict, sorted({*drifted, *summary["drifted"]}))
    return found


def _model_error(error: Any) -> str | None:
    if error is None:
        return None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return f"{code}: {message}" if code else str(message)
    return str(error)


def fleet_page(
    ctx: HubContext,
    *,
    selector: str = "",
    page: int = 1,
    per_page: int = DEFAULT_PER_PAGE,
    group: str | None = None,
) -> FleetPage:
    """One page of the fleet; ``InvalidInput`` for a bad selector (names the term)."""
    parsed = parse_selector(selector)
    now = datetime.now(UTC)
    matched = [s for s in ctx.sites.list() if parsed.matches(s.labels)]
    if group == "region":
        matched.sort(key=lambda s: (_region(s) == NO_REGION, _region(s), s.name))
    online = {s.name for s in matched if ctx.sites.online(s, now)}
    names = {s.name for s in matched}

    regions: dict[str, FleetRegion] = {}
    for site in matched:
        row = regions.setdefault(
            _region(site), FleetRegion(region=_region(site), sites=0, online=0, offline=0)
        )
        row.sites += 1
        if site.name in online:
            row.online += 1
        else:
            row.offline += 1

    fleet_recent = _Recent()
    per_key: dict[tuple[str, str], _Recent] = {}
    for window in ctx.store.telemetry.windows(since=now - timedelta(seconds=RECENT_S)):
        if window.site in names:
            fleet_recent.add(window, keep=False)
            per_key.setdefault((window.site, window.model), _Recent()).add(window)
    site_rates: dict[str, float] = {}
    for (site_name, _), recent in per_key.items():
        site_rates[site_name] = site_rates.get(site_name, 0.0) + recent.rate(now)

    all_totals = ctx.store.telemetry.totals()
    drift_keys = _drift_keys(ctx, all_totals, names, now)
    drift_by_site = {name: _drift_of(ctx, name, keys) for name, keys in drift_keys.items()}
    with_drift = sum(1 for models in drift_by_site.values() if any(v for v, _ in models.values()))

    open_anomalies: dict[tuple[str, str], list[str]] = {}
    for anomaly in ctx.anomalies.find(open_only=True):  # answered from the last pass
        if anomaly.site in names:
            open_anomalies.setdefault((anomaly.site, anomaly.model), []).append(anomaly.metric)

    pages = max(1, math.ceil(len(matched) / per_page))
    shown = matched[(page - 1) * per_page : page * per_page]
    totals: dict[tuple[str, str], int] = {}
    wanted = {s.name for s in shown}
    for total in all_totals:
        if total.site in wanted:
            key = (total.site, total.model)
            totals[key] = totals.get(key, 0) + total.requests
    rows = [
        _site_row(
            ctx, site, site.name in online, per_key, totals, drift_by_site, open_anomalies, now
        )
        for site in shown
    ]
    return FleetPage(
        at=now,
        recent_s=RECENT_S,
        selector=str(parsed) if parsed.terms else "",
        group=group,
        page=page,
        per_page=per_page,
        total=len(matched),
        pages=pages,
        summary=FleetSummary(
            sites_total=len(matched),
            sites_online=len(online),
            requests_per_s=round(sum(site_rates.values()), 3),
            error_rate=fleet_recent.error_rate(),
            sites_with_drift=with_drift,
            sites_with_anomalies=len({site for site, _ in open_anomalies}),
        ),
        regions=list(regions.values())
        if group == "region"
        else sorted(regions.values(), key=lambda r: r.region),
        sites=rows,
    )


def _site_row(
    ctx: HubContext,
    site: SiteRecord,
    online: bool,
    recent: dict[tuple[str, str], _Recent],
    totals: dict[tuple[str, str], int],
    drift: dict[str, dict[str, Any]],
    anomalies: dict[tuple[str, str], list[str]],
    now: datetime,
) -> FleetSite:
    view = ctx.sites.view(site)
    names = {m["name"] for m in view["models"]} | {m for s, m in recent if s == site.name}
    names |= {m for s, m in anomalies if s == site.name}
    reported = {m["name"]: m for m in view["models"]}
    models = []
    for name in sorted(names):
        state = reported.get(name, {})
        traffic = recent.get((site.name, name), _Recent())
        verdict, drifted = drift.get(site.name, {}).get(name, (None, []))
        models.append(
            FleetModel(
                name=name,
                assigned_version=state.get("assigned_version"),
                active_version=state.get("active_version"),
                state=state.get("state", "unassigned"),
                error=_model_error(state.get("error")),
                requests_per_s=traffic.rate(now),
                error_rate=traffic.error_rate(),
                p99_s=_p99(traffic.latency()),
                requests_total=totals.get((site.name, name), 0),
                drift=verdict,
                drifted=drifted,
                anomalies=sorted(anomalies.get((site.name, name), [])),
            )
        )
    merged = _Recent()
    for (name, _), traffic in recent.items():
        if name == site.name:
            merged.requests += traffic.requests
            merged.errors += traffic.errors
            merged.windows += traffic.windows
    return FleetSite(
        site=site.name,
        online=online,
        last_seen=site.last_seen,
        labels=site.labels,
        region=site.labels.get("region"),
        jurisdiction=site.labels.get("jurisdiction"),
        provider=site.labels.get("provider"),
        tier=site.labels.get("tier"),
        decommissioned=site.decommissioned_at is not None,
        models=models,
        requests_per_s=round(sum(m.requests_per_s for m in models), 3),
        error_rate=merged.error_rate(),
        p99_s=_p99(merged.latency()),
        drifted_features=sum(len(m.drifted) for m in models),
        open_anomalies=sum(len(m.anomalies) for m in models),
    )


PerPage = Annotated[
    int, Query(ge=1, le=MAX_PER_PAGE, description=f"Sites per page (1-{MAX_PER_PAGE}).")
]
PageNumber = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page, from 1.")]
SelectorQuery = Annotated[
    str,
    Query(
        max_length=MAX_SELECTOR_CHARS,
        description="Label selector, as on the CLI: region=eu-west,jurisdiction in (EU,UK).",
    ),
]


@router.get(
    "/fleet",
    response_model=FleetPage,
    summary="The fleet, one page of sites: state, models, rates, drift (viewer and up)",
)
def show_fleet(
    ctx: Context,
    caller: Caller,
    selector: SelectorQuery = "",
    page: PageNumber = 1,
    per_page: PerPage = DEFAULT_PER_PAGE,
    group: Annotated[Literal["region"] | None, Query(description="'region': by region")] = None,
) -> FleetPage:
    caller.require(Permission.SITES_READ)
    return fleet_page(ctx, selector=selector, page=page, per_page=per_page, group=group)
