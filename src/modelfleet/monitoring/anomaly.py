"""Anomalies in one site x model's telemetry windows: robust control charts with a warm-up.

Transport-free: the hub (``hub/anomalies.py``) and the bench (``bench/anomalies.py``)
hand it the windows sites ship, reduced to :class:`WindowStats`.

Method. Windows are grouped into fixed time buckets of ``bucket_s`` seconds (by the window's
midpoint; the bucket still filling, and the last ``settle_s`` seconds that sites may still be
shipping, are left out). Each bucket gives one value per metric series:

- ``request_rate`` — requests / ``bucket_s`` (0 for a bucket without any window), judged
  on the logarithm of the count (traffic changes are relative); two-sided;
- ``error_rate`` — errors / requests; high side only;
- ``p99`` — p99 latency (seconds) from the merged fixed-bucket histogram, judged on its
  logarithm (latency is multiplicative); high side only;
- ``output_<col>`` — the median of a numeric output column (a score, a probability, a
  class) from the merged KLL sketch; two-sided;
- ``missing:<feature>`` — the share of missing (NaN / inf / empty) values of an input
  column; high side only.

A bucket's value ``x`` is compared with the previous ``history`` defined values of the
same series: ``z = (x - median) / scale`` with ``scale = max(1.4826 * MAD, floor)`` — the
modified z-score of Iglewicz & Hoaglin (1993), whose 1.4826 factor makes the MAD a
consistent estimate of a normal standard deviation. The floor keeps a quiet series (MAD
0) from flagging noise: Poisson noise ``1 / sqrt(count)`` for the log request count,
binomial noise ``sqrt(p (1 - p) / n)`` for the error and missing shares, one histogram
bucket (~19 %) for p99, the median's sampling noise ``0.93 IQR / sqrt(n)`` for an output.
A bucket is anomalous when ``|z| >= sensitivity`` on the watched side *and* the change
is material (:data:`MIN_CHANGE`: the request rate down 30 % or up 43 %, one point of
error rate and at least :data:`MIN_ERRORS` failed requests, 1.5x the p99, a quarter of
the usual IQR of an output, five points of missing share). Nothing is judged before
``warmup`` defined values exist. Flagged buckets stay in the history, so a lasting change
becomes the new normal once it fills half the history (the median's breakdown point) and
its anomaly closes by itself.

``error_rate``, ``p99``, outputs and missing shares are defined only for buckets with at
least ``min_requests`` requests (values): a rate over three requests is noise.

``stuck:<feature>`` is judged per window, not per bucket: a numeric input whose window
sketch has ``min == max`` over at least 3 values, for ``stuck_windows`` consecutive
windows with traffic, while the feature varied (``min < max``) in at least one of the
earlier windows (a constant feature is not a stuck sensor).

An anomaly spans consecutive flagged buckets; it ends once ``clear_buckets`` evaluated
buckets in a row are normal (``end`` is the end of its last flagged bucket) and is open
(``end`` None) until then. Its ``observed``, ``expected`` (the baseline median) and
``score`` (``|z|``; for a stuck feature, run length / ``stuck_windows``) are those of its
most extreme bucket; ``severity`` is ``critical`` when the score reached twice the
sensitivity (for a stuck feature: twice ``stuck_windows``), else ``warning``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from modelfleet.errors import InvalidInput
from modelfleet.monitoring.anomaly_settings import SETTING_NAMES, AnomalySettings, check_settings
from modelfleet.monitoring.histograms import LATENCY_BOUNDS, dense, histogram_quantile, merge_counts
from modelfleet.monitoring.profiles import DatasetProfile, NumericProfile

__all__ = [
    "MIN_CHANGE",
    "SETTING_NAMES",
    "Anomaly",
    "AnomalySettings",
    "WindowStats",
    "check_settings",
    "detect",
]

#: The modified z-score factor (MAD of a normal distribution = 0.6745 sigma).
MAD_TO_SIGMA = 1.4826
#: Seconds after a bucket's end before it is judged: sites ship closed windows every few
#: seconds, so the newest bucket would otherwise look like a traffic drop.
SETTLE_S = 15.0
#: Values a window's numeric input must hold before ``min == max`` reads as "stuck".
STUCK_MIN_VALUES = 3
#: Failed requests a bucket needs before its error rate can be anomalous: with a rare
#: baseline (0.2 % of 200 requests is 0.4 a bucket) a Poisson tail of 3 or 4 would
#: otherwise pass for a burst.
MIN_ERRORS = 5
#: The smallest change that counts, per metric family (besides the z-score).
MIN_CHANGE: dict[str, float] = {
    "request_rate": math.log(1 / 0.7),  # log ratio: a 30 % drop (or a 43 % rise)
    "error_rate": 0.01,  # absolute share
    "p99": math.log(1.5),  # log ratio
    "output": 0.25,  # times the baseline's usual inter-quartile range
    "missing": 0.05,  # absolute share
}
Severity = Literal["warning", "critical"]
#: The log request count of a bucket without requests (as if half a request).
_NO_REQUESTS = math.log(0.5)


@dataclass(frozen=True)
class WindowStats:
    """One closed window as a site ships it, reduced to what the detector reads."""

    start: float  # epoch seconds
    end: float
    version: int
    requests: int
    errors: int
    latency: Mapping[str, int]  # the sparse fixed-bucket histogram
    inputs: Mapping[str, Any] = field(default_factory=dict)  # column docs (DatasetProfile)
    outputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Anomaly:
    """One anomaly of one metric at one site x model."""

    site: str
    model: str
    version: int  # the version serving most requests in its latest flagged bucket
    metric: str  # request_rate | error_rate | p99 | output_<col> | stuck:<f> | missing:<f>
    start: datetime
    end: datetime | None  # None while open
    detected_at: datetime  # end of the bucket (window) that first flagged it
    observed: float
    expected: float
    score: float
    severity: Severity

    @property
    def open(self) -> bool:
        return self.end is None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "open": self.open}


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


# --- buckets ---------------------------------------------------------------------------


@dataclass
class _Bucket:
    requests: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=list)
    by_version: dict[int, int] = field(default_factory=dict)
    inputs: DatasetProfile = field(default_factory=DatasetProfile)
    outputs: DatasetProfile = field(default_factory=DatasetProfile)

    def add(
        self, window: WindowStats, inputs: DatasetProfile, outputs: DatasetProfile | None = None
    ) -> None:
        self.requests += window.requests
        self.errors += window.errors
        merge_counts(self.latency, dense(window.latency, len(LATENCY_BOUNDS) + 1))
        self.by_version[window.version] = self.by_version.get(window.version, 0) + max(
            window.requests, 1
        )
        outs = _profile(window.outputs) if outputs is None else outputs
        for mine, theirs in ((self.inputs, inputs), (self.outputs, outs)):
            try:
                mine.merge(theirs)
            except InvalidInput:  # a feature numeric here, categorical there: skip the window's
                continue  # sketches, keep its counts (one odd window must not hide the rest)

    @property
    def version(self) -> int | None:
        if not self.by_version:
            return None
        return max(self.by_version.items(), key=lambda kv: (kv[1], kv[0]))[0]


def _profile(columns: Mapping[str, Any]) -> DatasetProfile:
    return DatasetProfile.from_dict({"columns": dict(columns)}) if columns else DatasetProfile()


# --- robust scoring --------------------------------------------------------------------


@dataclass(frozen=True)
class _Point:
    """A series value with what its floor needs: n (requests or values), spread (IQR)."""

    value: float
    n: int = 0
    spread: float = 0.0


@dataclass(frozen=True)
class _Judged:
    index: int
    flagged: bool
    observed: float
    expected: float
    z: float


def _floor(family: str, med: float, point: _Point, spread: float) -> float:
    if family == "request_rate":  # Poisson noise of the request count, in log space
        return 1.0 / math.sqrt(max(math.exp(med), 1.0))
    if family in ("error_rate", "missing"):  # binomial noise of a share over n
        n = max(point.n, 1)
        p = min(max(med, 1.0 / n), 1.0)
        return math.sqrt(p * (1.0 - p) / n) if p < 1.0 else 1.0 / n
    if family == "p99":  # one histogram bucket, in log space
        return math.log(LATENCY_BOUNDS[1] / LATENCY_BOUNDS[0])
    # Output median: its sampling noise, ~0.93 IQR / sqrt(n) for a normal-ish sample.
    return max(0.93 * spread / math.sqrt(max(point.n, 1)), 1e-9)


def _material(family: str, point: _Point, med: float, spread: float) -> bool:
    x = point.value
    change = abs(x - med)
    if family == "error_rate" and round(x * point.n) < MIN_ERRORS:
        return False
    if family == "output":
        return change >= max(MIN_CHANGE[family] * spread, 1e-9)
    return change >= MIN_CHANGE[family]


def _judge(
    family: str,
    points: Sequence[tuple[int, _Point]],
    settings: AnomalySettings,
    sides: Literal["both", "high"],
) -> list[_Judged]:
    """Modified z-score of each point against the previous ``history`` points."""
    judged: list[_Judged] = []
    values = [p.value for _, p in points]
    spreads = [p.spread for _, p in points]
    for at, (index, point) in enumerate(points):
        if at < settings.warmup:
            continue
        lo = max(0, at - settings.history)
        hist = values[lo:at]  # a few dozen values: statistics beats numpy's call overhead
        med = statistics.median(hist)
        mad = statistics.median([abs(v - med) for v in hist])
        spread = statistics.median(spreads[lo:at])
        scale = max(MAD_TO_SIGMA * mad, _floor(family, med, point, spread))
        z = (point.value - med) / scale
        side_ok = z > 0 if sides == "high" else True
        flagged = (
            side_ok and abs(z) >= settings.sensitivity and _material(family, point, med, spread)
        )
        judged.append(_Judged(index, flagged, point.value, med, z))
    return judged


# --- events ----------------------------------------------------------------------------


@dataclass
class _Event:
    first: int
    last: int
    peak: _Judged
    detected: int


def _events(judged: Iterable[_Judged], clear: int) -> list[tuple[_Event, bool]]:
    """Runs of flagged points (gaps of fewer than ``clear`` normal points bridged);
    each with whether it is still open."""
    events: list[tuple[_Event, bool]] = []
    current: _Event | None = None
    normal = 0
    for j in judged:
        if j.flagged:
            if current is None:
                current = _Event(j.index, j.index, j, j.index)
            else:
                current.last = j.index
                if abs(j.z) > abs(current.peak.z):
                    current.peak = j
            normal = 0
        elif current is not None:
            normal += 1
            if normal >= clear:
                events.append((current, False))
                current, normal = None, 0
    if current is not None:
        events.append((current, True))
    return events


def _severity(score: float, threshold: float) -> Severity:
    return "critical" if score >= 2 * threshold else "warning"


# --- the detector ------------------------------------------------------------------------


def _series(
    buckets: list[_Bucket], settings: AnomalySettings
) -> dict[str, tuple[str, Literal["both", "high"], list[tuple[int, _Point]]]]:
    """metric -> (family, sides, [(bucket index, point)]) of every defined value."""
    out: dict[str, tuple[str, Literal["both", "high"], list[tuple[int, _Point]]]] = {
        "request_rate": ("request_rate", "both", []),
        "error_rate": ("error_rate", "high", []),
        "p99": ("p99", "high", []),
    }
    need = settings.min_requests
    for i, b in enumerate(buckets):
        count = math.log(b.requests) if b.requests else _NO_REQUESTS  # changes are relative
        out["request_rate"][2].append((i, _Point(count, b.requests)))
        if b.requests >= need:
            out["error_rate"][2].append((i, _Point(b.errors / b.requests, b.requests)))
            p99 = histogram_quantile(b.latency, 0.99, LATENCY_BOUNDS)
            if p99 is not None and p99 > 0:
                out["p99"][2].append((i, _Point(math.log(p99), b.requests)))
        for name, col in sorted(b.outputs.columns.items()):
            if isinstance(col, NumericProfile) and col.n >= need:
                q1, med, q3 = (float(col.sketch.get_quantile(q)) for q in (0.25, 0.5, 0.75))
                series = out.setdefault(f"output_{name}", ("output", "both", []))[2]
                series.append((i, _Point(med, col.n, q3 - q1)))
        for name, col in sorted(b.inputs.columns.items()):
            if col.count >= need:
                series = out.setdefault(f"missing:{name}", ("missing", "high", []))[2]
                series.append((i, _Point(col.missing / col.count, col.count)))
    return out


def window_order(window: WindowStats) -> tuple[float, float, int, int]:
    """Windows are read by end; ties broken by start and version so that the merge order
    of a bucket's sketches (which a KLL merge depends on) never depends on arrival order."""
    return (window.end, window.start, window.version, window.requests)


def _bucket_of(window: WindowStats, bucket_s: float) -> int:
    """The bucket holding the window's midpoint: a window closing on the grid line
    belongs to the bucket it covers, not the next one."""
    return math.floor((window.start + window.end) / 2 / bucket_s)


def event_anomaly(
    event: _Event,
    still_open: bool,
    *,
    site: str,
    model: str,
    metric: str,
    family: str,
    version: int,
    offset: int,
    settings: AnomalySettings,
) -> Anomaly:
    """The anomaly of one run of flagged buckets (indices relative to bucket ``offset``);
    shared with the incremental state of ``anomaly_series.py`` so both report alike."""
    b = settings.bucket_s
    peak = event.peak
    observed, expected = peak.observed, peak.expected
    if family == "p99":
        observed, expected = math.exp(observed), math.exp(expected)
    elif family == "request_rate":  # log counts back to rates; log(0.5) stands for 0
        observed = 0.0 if observed <= _NO_REQUESTS else math.exp(observed) / b
        expected = 0.0 if expected <= _NO_REQUESTS else math.exp(expected) / b
    score = abs(peak.z)
    return Anomaly(
        site=site,
        model=model,
        version=version,
        metric=metric,
        start=_ts((offset + event.first) * b),
        end=None if still_open else _ts((offset + event.last + 1) * b),
        detected_at=_ts((offset + event.detected + 1) * b),
        observed=round(observed, 9),
        expected=round(expected, 9),
        score=round(min(score, 1e9), 3),
        severity=_severity(score, settings.sensitivity),
    )


def detect(
    windows: Iterable[WindowStats],
    settings: AnomalySettings,
    *,
    site: str,
    model: str,
    now: float,
    settle_s: float = SETTLE_S,
) -> list[Anomaly]:
    """Every anomaly in the windows of one site x model, oldest first."""
    ordered = sorted(windows, key=window_order)
    b = settings.bucket_s
    last = math.floor((now - settle_s) / b) - 1  # the newest complete, settled bucket
    ordered = [w for w in ordered if _bucket_of(w, b) <= last]
    if not ordered:
        return []
    first = min(_bucket_of(w, b) for w in ordered)
    buckets = [_Bucket() for _ in range(last - first + 1)]
    inputs = [_profile(w.inputs) for w in ordered]  # read once: buckets and stuck both use it
    for window, profile in zip(ordered, inputs, strict=True):
        buckets[_bucket_of(window, b) - first].add(window, profile)

    def version_at(index: int) -> int:
        for k in range(index, -1, -1):
            found = buckets[k].version
            if found is not None:
                return found
        return ordered[0].version

    found: list[Anomaly] = []
    for metric, (family, sides, points) in _series(buckets, settings).items():
        judged = _judge(family, points, settings, sides)
        for event, still_open in _events(judged, settings.clear_buckets):
            found.append(
                event_anomaly(
                    event,
                    still_open,
                    site=site,
                    model=model,
                    metric=metric,
                    family=family,
                    version=version_at(event.last),
                    offset=first,
                    settings=settings,
                )
            )
    found.extend(_stuck(ordered, inputs, settings, site=site, model=model))
    return sorted(found, key=lambda a: (a.start, a.metric))


def _stuck(
    windows: Sequence[WindowStats],
    profiles: Sequence[DatasetProfile],
    settings: AnomalySettings,
    *,
    site: str,
    model: str,
) -> list[Anomaly]:
    """Inputs whose windows show one value over ``stuck_windows`` windows in a row."""
    k = settings.stuck_windows
    runs: dict[str, list[tuple[WindowStats, float]]] = {}
    varied: set[str] = set()
    seen: dict[str, int] = {}
    found: list[Anomaly] = []

    def close(name: str, still_open: bool) -> None:
        run = runs.pop(name, [])
        if len(run) < k:
            return
        values = [v for _, v in run]
        found.append(
            Anomaly(
                site=site,
                model=model,
                version=run[-1][0].version,
                metric=f"stuck:{name}",
                start=_ts(run[0][0].start),
                end=None if still_open else _ts(run[-1][0].end),
                detected_at=_ts(run[k - 1][0].end),
                observed=values[-1],
                expected=float("nan"),  # replaced below by the varied history's median
                score=round(len(run) / k, 3),
                severity="critical" if len(run) >= 2 * k else "warning",
            )
        )

    medians: dict[str, list[float]] = {}
    for window, profile in zip(windows, profiles, strict=True):
        for name, col in profile.columns.items():
            if not isinstance(col, NumericProfile) or col.n < STUCK_MIN_VALUES:
                continue
            lo, hi = col.min, col.max
            if lo is None or hi is None:
                continue
            if lo == hi and name in varied and seen.get(name, 0) >= settings.warmup:
                runs.setdefault(name, []).append((window, lo))
                continue
            close(name, False)
            seen[name] = seen.get(name, 0) + 1
            if lo < hi:
                varied.add(name)
                history = medians.setdefault(name, [])
                history.append(float(col.sketch.get_quantile(0.5)))
                del history[: -settings.history]
    for name in sorted(runs):
        close(name, True)
    return [
        Anomaly(
            **{
                **asdict(a),
                "expected": round(statistics.median(medians[a.metric[6:]]), 9),
            }
        )
        for a in found
    ]
