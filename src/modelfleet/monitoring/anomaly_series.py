"""The detector of ``anomaly.py`` kept up to date window by window, for one site x model.

Why: :func:`~modelfleet.monitoring.anomaly.detect` re-reads every window (mostly
deserializing KLL sketches) on each call; at a thousand site x model series that is far
too slow for a hub answering ``/metrics`` and dashboards. :class:`SeriesState` reads each
window once, when it is added, and judges each bucket once, when it settles.

Equivalence. After adding windows ``W`` (in any order, in any number of calls) and
:meth:`SeriesState.advance` to ``now``, :meth:`SeriesState.anomalies` equals
``detect(W, settings, now=now)`` — the pure function stays the reference (tests hold the
two equal). Each bucket's value depends only on its own windows and the ``history``
values before it, so judging a bucket once is exact, and the state keeps only what the
next judgment reads (the last ``history`` values per metric, the open run, the closed
anomalies): bounded memory however long the series runs. A window arriving for a bucket
already judged (a site shipping a backlog late) cannot be merged in afterwards:
:meth:`SeriesState.add` answers False and the owner rebuilds the series from its windows.

Caveat shared with ``detect``: a bucket's sketches merge in :func:`window_order`; merging
KLL sketches past their buffer uses random compaction, so two computations over sketches
holding more than a few hundred values each may differ in the last digits of an output
median (exactly as two calls of ``detect`` may).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Literal

from modelfleet.monitoring.anomaly import (
    MAD_TO_SIGMA,
    SETTLE_S,
    STUCK_MIN_VALUES,
    Anomaly,
    AnomalySettings,
    WindowStats,
    _Bucket,
    _bucket_of,
    _Event,
    _floor,
    _Judged,
    _material,
    _Point,
    _profile,
    _series,
    _ts,
    event_anomaly,
    window_order,
)
from modelfleet.monitoring.profiles import DatasetProfile, NumericProfile

__all__ = ["SeriesState"]


@dataclass
class _Pending:
    """A window read once (its sketches parsed) waiting for its bucket to settle."""

    window: WindowStats
    inputs: DatasetProfile
    outputs: DatasetProfile


@dataclass
class _Metric:
    family: str
    sides: Literal["both", "high"]
    values: deque[float]
    spreads: deque[float]
    count: int = 0
    current: _Event | None = None
    version: int = 0  # version serving at the current run's last bucket
    normal: int = 0
    closed: list[Anomaly] = field(default_factory=list)


@dataclass
class _Run:
    """A stuck input's run of windows with ``min == max`` (what its anomaly needs only)."""

    start: float
    length: int = 0
    detected: float = 0.0
    end: float = 0.0
    version: int = 0
    value: float = 0.0


class SeriesState:
    """The anomalies of one site x model, updated as windows arrive (not thread-safe: the
    hub's pass owns it)."""

    def __init__(
        self, site: str, model: str, settings: AnomalySettings, *, settle_s: float = SETTLE_S
    ) -> None:
        self.site = site
        self.model = model
        self.settings = settings
        self.settle_s = settle_s
        self.first: int | None = None  # bucket of the earliest window
        self.next: int | None = None  # the next bucket to judge (None: nothing judged yet)
        self.last_end = -math.inf  # end of the newest window added
        self._pending: dict[int, list[_Pending]] = {}
        self._metrics: dict[str, _Metric] = {}
        self._version: int | None = None
        self._runs: dict[str, _Run] = {}
        self._varied: set[str] = set()
        self._seen: dict[str, int] = {}
        self._medians: dict[str, deque[float]] = {}
        self._stuck_closed: list[Anomaly] = []
        self._cached: list[Anomaly] | None = None

    def add(self, window: WindowStats) -> bool:
        """Read one window; False (nothing changed) if its bucket was judged already."""
        b = _bucket_of(window, self.settings.bucket_s)
        if self.next is not None and b < self.next:
            return False
        self.first = b if self.first is None else min(self.first, b)
        self.last_end = max(self.last_end, window.end)
        self._pending.setdefault(b, []).append(
            _Pending(window, _profile(window.inputs), _profile(window.outputs))
        )
        return True

    def advance(self, now: float) -> bool:
        """Judge every bucket complete and settled at ``now``; True if any was."""
        if self.first is None:
            return False
        last = math.floor((now - self.settle_s) / self.settings.bucket_s) - 1
        start = self.first if self.next is None else self.next
        if last < start:
            return False
        for k in range(start, last + 1):
            self._settle(k)
        self.next = last + 1
        self._cached = None
        return True

    def prune(self, before: float) -> None:
        """Forget closed anomalies that ended before ``before`` (epoch seconds)."""
        for m in self._metrics.values():
            m.closed = [a for a in m.closed if a.end is None or a.end.timestamp() >= before]
        self._stuck_closed = [
            a for a in self._stuck_closed if a.end is None or a.end.timestamp() >= before
        ]
        self._cached = None

    def anomalies(self) -> list[Anomaly]:
        """Every anomaly known (open, and closed ones not pruned), oldest first."""
        if self._cached is None:
            self._cached = self._collect()
        return self._cached

    # --- buckets -------------------------------------------------------------------------

    def _settle(self, k: int) -> None:
        items = sorted(self._pending.pop(k, []), key=lambda p: window_order(p.window))
        bucket = _Bucket()
        for p in items:
            bucket.add(p.window, p.inputs, p.outputs)
        if bucket.version is not None:
            self._version = bucket.version
        for metric, (family, sides, points) in _series([bucket], self.settings).items():
            for _, point in points:
                self._judge(metric, family, sides, k, point)
        for p in items:
            self._stuck(p.window, p.inputs)

    def _judge(
        self, metric: str, family: str, sides: Literal["both", "high"], k: int, point: _Point
    ) -> None:
        s = self.settings
        m = self._metrics.get(metric)
        if m is None:
            m = _Metric(family, sides, deque(maxlen=s.history), deque(maxlen=s.history))
            self._metrics[metric] = m
        value, spread_of = point.value, point.spread
        if m.count >= s.warmup:
            hist = list(m.values)
            med = statistics.median(hist)
            mad = statistics.median([abs(v - med) for v in hist])
            spread = statistics.median(m.spreads)
            scale = max(MAD_TO_SIGMA * mad, _floor(family, med, point, spread))
            z = (value - med) / scale
            side_ok = z > 0 if sides == "high" else True
            flagged = side_ok and abs(z) >= s.sensitivity and _material(family, point, med, spread)
            self._event(metric, m, _Judged(k, flagged, value, med, z))
        m.count += 1
        m.values.append(value)
        m.spreads.append(spread_of)

    def _event(self, metric: str, m: _Metric, j: _Judged) -> None:
        if j.flagged:
            if m.current is None:
                m.current = _Event(j.index, j.index, j, j.index)
            else:
                m.current.last = j.index
                if abs(j.z) > abs(m.current.peak.z):
                    m.current.peak = j
            m.version = self._version if self._version is not None else 0
            m.normal = 0
        elif m.current is not None:
            m.normal += 1
            if m.normal >= self.settings.clear_buckets:
                m.closed.append(self._anomaly(metric, m, m.current, still_open=False))
                m.current, m.normal = None, 0

    def _anomaly(self, metric: str, m: _Metric, event: _Event, *, still_open: bool) -> Anomaly:
        return event_anomaly(
            event,
            still_open,
            site=self.site,
            model=self.model,
            metric=metric,
            family=m.family,
            version=m.version,
            offset=0,
            settings=self.settings,
        )

    # --- stuck inputs ----------------------------------------------------------------------

    def _stuck(self, window: WindowStats, profile: DatasetProfile) -> None:
        s = self.settings
        for name, col in profile.columns.items():
            if not isinstance(col, NumericProfile) or col.n < STUCK_MIN_VALUES:
                continue
            lo, hi = col.min, col.max
            if lo is None or hi is None:
                continue
            if lo == hi and name in self._varied and self._seen.get(name, 0) >= s.warmup:
                run = self._runs.setdefault(name, _Run(window.start))
                run.length += 1
                if run.length == s.stuck_windows:
                    run.detected = window.end
                run.end, run.version, run.value = window.end, window.version, lo
                continue
            self._close_run(name, still_open=False)
            self._seen[name] = self._seen.get(name, 0) + 1
            if lo < hi:
                self._varied.add(name)
                history = self._medians.setdefault(name, deque(maxlen=s.history))
                history.append(float(col.sketch.get_quantile(0.5)))

    def _close_run(self, name: str, *, still_open: bool) -> Anomaly | None:
        run = self._runs.get(name) if still_open else self._runs.pop(name, None)
        k = self.settings.stuck_windows
        if run is None or run.length < k:
            return None
        found = Anomaly(
            site=self.site,
            model=self.model,
            version=run.version,
            metric=f"stuck:{name}",
            start=_ts(run.start),
            end=None if still_open else _ts(run.end),
            detected_at=_ts(run.detected),
            observed=run.value,
            expected=float("nan"),  # the varied history's median, when reported
            score=round(run.length / k, 3),
            severity="critical" if run.length >= 2 * k else "warning",
        )
        if not still_open:
            self._stuck_closed.append(found)
        return found

    def _collect(self) -> list[Anomaly]:
        found: list[Anomaly] = []
        for metric, m in self._metrics.items():
            found.extend(m.closed)
            if m.current is not None:
                found.append(self._anomaly(metric, m, m.current, still_open=True))
        stuck = list(self._stuck_closed)
        for name in sorted(self._runs):
            still = self._close_run(name, still_open=True)
            if still is not None:
                stuck.append(still)
        found.extend(
            replace(a, expected=round(statistics.median(self._medians[a.metric[6:]]), 9))
            for a in stuck
        )
        return sorted(found, key=lambda a: (a.start, a.metric))
