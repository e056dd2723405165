"""Telemetry over time: what ``GET /api/v1/telemetry/series`` answers (the performance
page's JSON twin)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from modelfleet.api._base import Record

__all__ = ["SeriesBucket", "SeriesReport", "TelemetrySeries"]

#: The most buckets one series holds (the hub picks the bucket width to stay within it).
MAX_BUCKETS = 120


class SeriesBucket(Record):
    """One bucket of merged windows (a window counts in the bucket its end falls in).

    ``requests_per_s`` divides by the part of the bucket inside the range; ``error_rate``
    and the percentiles are None for a bucket without requests. Percentiles come from the
    merged fixed-bucket latency histograms (within one histogram bucket, <= 19 %)."""

    start: datetime
    requests: int = Field(ge=0)
    errors: int = Field(ge=0)
    requests_per_s: float = Field(ge=0)
    error_rate: float | None = Field(ge=0, le=1)
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None


class TelemetrySeries(Record):
    """One line: a site (None: the sites merged) x version (None: the versions merged)."""

    site: str | None
    version: int | None
    requests: int = Field(ge=0)
    errors: int = Field(ge=0)
    buckets: list[SeriesBucket] = Field(max_length=MAX_BUCKETS)


class SeriesReport(Record):
    """Per site (x version) buckets of one model over a range.

    ``retained_since``: windows before it were folded into lifetime totals by retention,
    which hold no time or latency, so the range shows only what the retained windows hold
    (``note`` says so when the range reaches past it)."""

    model: str
    version: int | None
    range: Literal["1h", "24h", "7d"] | None
    since: datetime
    until: datetime
    bucket_s: float = Field(gt=0)
    retained_since: datetime
    note: str
    series: list[TelemetrySeries] = Field(max_length=1000)
