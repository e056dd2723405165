"""The fleet overview, one page of sites at a time (``GET /api/v1/fleet``; the dashboard's
fleet page shows the same rows)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from modelfleet.api._base import Record

__all__ = ["FleetModel", "FleetPage", "FleetRegion", "FleetSite", "FleetSummary"]


class FleetModel(Record):
    """One model at one site: desired (assigned) vs reported, and its recent traffic."""

    name: str
    assigned_version: int | None = Field(description="What the hub wants the site to run.")
    active_version: int | None = Field(description="What the site reported serving.")
    state: str = Field(description="ready, downloading, loading, failed, pending, ...")
    error: str | None = Field(description="Why it is not serving (code: message), if failed.")
    requests_per_s: float
    error_rate: float | None
    p99_s: float | None
    requests_total: int
    drift: bool | None = Field(description="None: no reference profile or no recent data.")
    drifted: list[str] = Field(description="The drifted features of the active version.")
    anomalies: list[str] = Field(
        default_factory=list,
        description="Metrics with an open anomaly (hub/anomalies.py): error_rate, stuck:<f>, ...",
    )


class FleetSite(Record):
    site: str
    online: bool
    last_seen: datetime | None
    labels: dict[str, str]
    region: str | None
    jurisdiction: str | None
    provider: str | None
    tier: str | None
    decommissioned: bool
    models: list[FleetModel]
    requests_per_s: float
    error_rate: float | None
    p99_s: float | None
    drifted_features: int = Field(description="Drifted features over the site's models.")
    open_anomalies: int = Field(default=0, description="Open anomalies over the site's models.")


class FleetRegion(Record):
    """One region's counts over every site the selector matches (not only this page)."""

    region: str = Field(description="The region label; '(none)' for sites without one.")
    sites: int
    online: int
    offline: int


class FleetSummary(Record):
    """Figures over every site the selector matches."""

    sites_total: int
    sites_online: int
    requests_per_s: float
    error_rate: float | None
    sites_with_drift: int
    sites_with_anomalies: int = 0


class FleetPage(Record):
    at: datetime
    recent_s: float = Field(description="Seconds of recent windows behind the rates.")
    selector: str
    group: str | None = Field(description="'region': rows ordered by region, then name.")
    page: int
    per_page: int
    total: int = Field(description="Sites the selector matches.")
    pages: int
    summary: FleetSummary
    regions: list[FleetRegion]
    sites: list[FleetSite]
