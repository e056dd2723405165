"""Telemetry over time: per site x model (x version) buckets for the dashboard's charts.

The hub keeps every window a site sends, with its counts and its fixed-bucket latency
histogram, for ``telemetry_retention_days``; older windows are folded by
:mod:`modelfleet.hub.retention` into one lifetime total per site x model x version
(windows, requests, errors, first start, last end). Those roll-ups hold no time and no
histogram, so they cannot be drawn over time: every series here comes from the retained
windows only, and a range that reaches past the retention horizon says so ("7 d shows what
the retained windows hold"). Lifetime totals stay where they are exact (``status``).

A window counts in the bucket its end falls in (windows are seconds long, buckets a minute
or more). Counts add up; latency histograms merge by adding counts, as in
:mod:`modelfleet.hub.telemetry`, and p50/p95/p99 are read from the merged histogram, so they
are exact to within one histogram bucket (<= 19 %). The bucket width follows the range so
that a series never holds more than :data:`MAX_BUCKETS` buckets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from modelfleet.errors import InvalidInput
from modelfleet.hub.store import TelemetryRepo
from modelfleet.hub.store.records import WindowRecord
from modelfleet.monitoring import drift
from modelfleet.monitoring.histograms import LATENCY_BOUNDS, dense, histogram_quantile, merge_counts
from modelfleet.monitoring.profiles import DatasetProfile

RangeName = Literal["1h", "24h", "7d"]
#: Each named range: (span in seconds, bucket width in seconds): 60, 96 and 84 buckets.
RANGES: dict[str, tuple[float, float]] = {
    "1h": (3600.0, 60.0),
    "24h": (86400.0, 900.0),
    "7d": (7 * 86400.0, 7200.0),
}
MAX_BUCKETS = 120
#: The narrowest bucket of a free span (a rollout's few minutes): the sites' window length.
MIN_BUCKET_S = 1.0
#: The longest free span: a rollout older than this is drawn over its last 7 days.
MAX_SPAN_S = RANGES["7d"][0]
#: How series are split: per site (versions merged), per site x version, or per version
#: (sites merged: a rollout's new version against its previous one on the wave's sites).
GroupBy = Literal["site", "site_version", "version"]
_BINS = len(LATENCY_BOUNDS) + 1


@dataclass(frozen=True)
class Bucket:
    """Merged windows that ended in ``[start, start + width)``."""

    start: datetime
    requests: int
    errors: int
    requests_per_s: float
    error_rate: float | None  # None: no request in the bucket
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None


@dataclass(frozen=True)
class Series:
    """One line of a chart: a site (None: merged) x version (None: merged)."""

    site: str | None
    version: int | None
    requests: int
    errors: int
    buckets: list[Bucket]


@dataclass(frozen=True)
class SeriesSet:
    """The answer for one model over one span (``range`` None: a free span)."""

    model: str
    version: int | None
    range: RangeName | None
    since: datetime
    until: datetime
    bucket_s: float
    retained_since: datetime
    note: str
    series: list[Series] = field(default_factory=list)


@dataclass
class _Acc:
    requests: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * _BINS)


def _worst_input(
    reference: DatasetProfile,
    inputs: DatasetProfile,
    outputs: DatasetProfile,
    thresholds: dict[str, float],
) -> float | None:
    """As the gate source reads drift (hub/rollout/sources.py): the largest input
    statistic, PSI for a numeric feature, Jensen-Shannon distance otherwise."""
    worst: float | None = None
    for feature in drift.compare(reference, inputs, outputs, thresholds):
        if feature.role != "input":
            continue
        value = feature.psi if feature.kind == "numeric" else None
        value = value if value is not None else feature.js
        if value is not None and (worst is None or value > worst):
            worst = round(float(value), 6)
    return worst


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def bucket_width(span_s: float) -> float:
    """The width that draws ``span_s`` in at most :data:`MAX_BUCKETS` buckets."""
    return max(MIN_BUCKET_S, float(math.ceil(span_s / MAX_BUCKETS)))


def _grid(
    since: datetime, until: datetime, bucket_s: float | None
) -> tuple[datetime, datetime, float, float, int]:
    """The buckets of a span: (since, until, width, first start, count), at most
    :data:`MAX_BUCKETS` and at most :data:`MAX_SPAN_S` back from ``until``."""
    if until <= since:
        until = since + timedelta(seconds=MIN_BUCKET_S)
    since = max(since, until - timedelta(seconds=MAX_SPAN_S))
    width = max(bucket_s or 0.0, bucket_width((until - since).total_seconds()))
    while True:
        first = math.floor(since.timestamp() / width) * width
        count = max(1, math.ceil((until.timestamp() - first) / width))
        if count <= MAX_BUCKETS:  # aligning the first bucket may add one
            return since, until, width, first, count
        width += MIN_BUCKET_S


@dataclass(frozen=True)
class DriftSeries:
    """The worst input drift statistic over time (PSI for numeric features, Jensen-Shannon
    distance for categorical ones: the figure the ``max_drift`` gate reads), each bucket's
    value computed on the sketches merged from ``since`` to the bucket's end."""

    starts: list[datetime]
    bucket_s: float
    values: list[float | None]  # None: no window yet, or too few samples to judge


class TimeSeries:
    """Series of the telemetry windows in ``repo`` (the store's telemetry repository)."""

    def __init__(self, repo: TelemetryRepo, *, retention_days: float) -> None:
        self.repo = repo
        self.retention = timedelta(days=retention_days)

    def over_range(
        self,
        model: str,
        range_name: str,
        *,
        sites: Sequence[str] | None = None,
        version: int | None = None,
        group_by: GroupBy = "site",
        now: datetime | None = None,
    ) -> SeriesSet:
        """The last hour, day or week (``1h``, ``24h``, ``7d``) in fixed buckets."""
        if range_name not in RANGES:
            raise InvalidInput(f"unknown range {range_name!r}; use one of {', '.join(RANGES)}")
        span_s, width = RANGES[range_name]
        until = now or datetime.now(UTC)
        result = self.between(
            model,
            until - timedelta(seconds=span_s),
            until,
            sites=sites,
            version=version,
            group_by=group_by,
            bucket_s=width,
        )
        name: RangeName = "1h" if range_name == "1h" else "24h" if range_name == "24h" else "7d"
        return replace(result, range=name)

    def between(
        self,
        model: str,
        since: datetime,
        until: datetime,
        *,
        sites: Sequence[str] | None = None,
        version: int | None = None,
        group_by: GroupBy = "site",
        bucket_s: float | None = None,
    ) -> SeriesSet:
        """Buckets from ``since`` to ``until`` (at most 7 days back from ``until``)."""
        since, until, width, first, count = _grid(since, until, bucket_s)
        wanted = set(sites) if sites is not None else None
        groups: dict[tuple[str | None, int | None], list[_Acc]] = {}
        for window in self._windows(model, version, since):
            if (wanted is not None and window.site not in wanted) or window.end_at > until:
                continue
            index = int((window.end_at.timestamp() - first) // width)
            if not 0 <= index < count:
                continue
            key = self._key(window, group_by)
            accs = groups.get(key)
            if accs is None:
                accs = groups[key] = [_Acc() for _ in range(count)]
            acc = accs[index]
            acc.requests += window.requests
            acc.errors += window.errors
            merge_counts(acc.latency, dense(window.latency, _BINS))
        series = [
            self._series(key, accs, first, width, since, until)
            for key, accs in sorted(groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] or 0))
        ]
        retained_since = until - self.retention
        note = ""
        if since < retained_since:
            note = (
                f"windows older than {self.retention.days} d were folded into lifetime totals "
                "(no time or latency), so this range shows what the retained windows hold"
            )
        return SeriesSet(
            model=model,
            version=version,
            range=None,
            since=since,
            until=until,
            bucket_s=width,
            retained_since=retained_since,
            note=note,
            series=series,
        )

    def drift_between(
        self,
        model: str,
        version: int,
        sites: Sequence[str],
        since: datetime,
        until: datetime,
        reference: DatasetProfile,
        thresholds: dict[str, float],
    ) -> DriftSeries:
        """The drift figure as it grew since ``since`` on the same buckets as
        :meth:`between`: cumulative, because one bucket's few samples say little (and a
        new version's windows since its rollout started are what its gate compares)."""
        since, until, width, first, count = _grid(since, until, None)
        wanted = set(sites)
        per_bucket: list[list[WindowRecord]] = [[] for _ in range(count)]
        for window in self.repo.windows(
            model=model, version=version, since=since, with_profiles=True
        ):
            index = int((window.end_at.timestamp() - first) // width)
            if window.site in wanted and window.end_at <= until and 0 <= index < count:
                per_bucket[index].append(window)
        inputs, outputs = DatasetProfile(), DatasetProfile()
        values: list[float | None] = []
        seen = False
        for windows in per_bucket:
            for window in windows:
                profiles = window.profiles or {}
                inputs.merge(DatasetProfile.from_dict({"columns": profiles.get("inputs", {})}))
                outputs.merge(DatasetProfile.from_dict({"columns": profiles.get("outputs", {})}))
                seen = True
            values.append(_worst_input(reference, inputs, outputs, thresholds) if seen else None)
        starts = [datetime.fromtimestamp(first + i * width, UTC) for i in range(count)]
        return DriftSeries(starts, width, values)

    def _windows(self, model: str, version: int | None, since: datetime) -> list[WindowRecord]:
        return self.repo.windows(model=model, version=version, since=since)

    @staticmethod
    def _key(window: WindowRecord, group_by: GroupBy) -> tuple[str | None, int | None]:
        if group_by == "site":
            return (window.site, None)
        if group_by == "version":
            return (None, window.version)
        return (window.site, window.version)

    @staticmethod
    def _series(
        key: tuple[str | None, int | None],
        accs: list[_Acc],
        first: float,
        width: float,
        since: datetime,
        until: datetime,
    ) -> Series:
        buckets = []
        lo, hi = since.timestamp(), until.timestamp()
        for index, acc in enumerate(accs):
            start = first + index * width
            covered = max(1e-3, min(hi, start + width) - max(lo, start))
            quantiles = [
                _round(histogram_quantile(acc.latency, q, LATENCY_BOUNDS)) if acc.requests else None
                for q in (0.50, 0.95, 0.99)
            ]
            buckets.append(
                Bucket(
                    start=datetime.fromtimestamp(start, UTC),
                    requests=acc.requests,
                    errors=acc.errors,
                    requests_per_s=round(acc.requests / covered, 3),
                    error_rate=round(acc.errors / acc.requests, 6) if acc.requests else None,
                    p50_s=quantiles[0],
                    p95_s=quantiles[1],
                    p99_s=quantiles[2],
                )
            )
        return Series(
            site=key[0],
            version=key[1],
            requests=sum(a.requests for a in accs),
            errors=sum(a.errors for a in accs),
            buckets=buckets,
        )
