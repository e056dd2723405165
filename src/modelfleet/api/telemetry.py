"""Fleet health and drift, as the hub aggregates the sites' telemetry windows."""

from __future__ import annotations

from datetime import datetime

from pydantic import JsonValue

from modelfleet.api._base import Free, Record

__all__ = ["DriftReport", "DriftResult", "FleetTraffic", "SiteHealth", "TelemetryStatus"]


class SiteHealth(Record):
    """One site at a glance (``removed`` sites still have telemetry)."""

    site: str
    online: bool
    last_seen: datetime | None
    labels: dict[str, str]
    serving: dict[str, JsonValue]  # model -> active version, as the site reported it
    requests_per_s: float
    error_rate: float | None
    p99_s: float | None
    requests_total: int
    drift: list[str]
    dropped: dict[str, int]


class FleetTraffic(Record):
    """Recent traffic of one model version over the fleet (percentiles as ``p50_s``...)."""

    model: str
    version: int
    recent_requests: int
    requests_per_s: float
    error_rate: float | None


class TelemetryStatus(Record):
    at: datetime
    recent_s: float
    sites: list[SiteHealth]
    fleet: list[FleetTraffic]


class DriftResult(Record):
    """One (site, version): ``drift`` None without a reference profile or enough data."""

    site: str
    model: str
    version: int
    windows: int
    requests: int
    reference: bool
    drift: bool | None
    drifted: list[str]
    features: list[Free]


class DriftReport(Record):
    model: str
    version: int | None
    site: str | None
    since: datetime
    thresholds: dict[str, float]
    threshold_help: dict[str, str]
    results: list[DriftResult]
