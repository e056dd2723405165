"""Ground-truth accuracy on the hub: what sites' labels say about each site x version.

Sites join labels with their own predictions and ship only counts, in the ``feedback``
block of their telemetry windows (``modelfleet.site.feedback``). This service stores
those counts once per window (:meth:`Accuracy.ingest`, called by the telemetry ingest) and
reads them back:

- :meth:`Accuracy.latest` — one :class:`AccuracyFigure` per site x version over the labels
  of the last :data:`LATEST_S` seconds (what ``modelfleet status``, the Prometheus gauge
  ``modelfleet_accuracy`` and triggers read);
- :meth:`Accuracy.figures` — the same, for any site / version / time range (the API);
- :meth:`Accuracy.series` — per site x version, one point per time bucket (the dashboard);
- :meth:`Accuracy.merged` — one figure over several sites (the rollout gates).

The metric follows what the site counted: a classifier's windows give ``accuracy``
(correct labels / labels), a regressor's give ``mae`` (mean absolute error). Figures add
counts first and divide last, so merging sites or windows is exact.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from modelfleet.hub.store import Store
from modelfleet.hub.store.records.accuracy import AccuracyWindow
from modelfleet.refs import check_name

__all__ = [
    "LATEST_S",
    "Accuracy",
    "AccuracyCollector",
    "AccuracyFigure",
    "AccuracyPoint",
    "accuracy_window",
]

log = logging.getLogger("modelfleet.hub.accuracy")

#: Labels behind :meth:`Accuracy.latest`: the last seven days of windows.
LATEST_S = 7 * 86_400.0
#: Points one series may hold (wider ranges get wider buckets).
MAX_POINTS = 500
DROP_REASONS = ("unknown_id", "expired", "duplicate", "bad_label")


@dataclass(frozen=True)
class AccuracyFigure:
    """Accuracy (classifier) or MAE (regressor) of one version at one site."""

    site: str
    version: int
    metric: str  # "accuracy" | "mae"
    value: float
    count: int


@dataclass(frozen=True)
class AccuracyPoint:
    """One bucket of a series: the figure over the windows that ended in it."""

    site: str
    version: int
    metric: str
    at: datetime
    value: float
    count: int


@dataclass
class _Sum:
    """Counts of windows, added up before any division."""

    kind: str = ""
    labels: int = 0
    correct: int = 0
    abs_error_sum: float = 0.0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))

    def add(self, window: AccuracyWindow) -> None:
        self.kind = self.kind or window.kind
        self.labels += window.labels
        self.correct += window.correct
        self.abs_error_sum += window.abs_error_sum
        for reason, n in window.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    @property
    def metric(self) -> str:
        return "mae" if self.kind == "regressor" else "accuracy"

    @property
    def value(self) -> float | None:
        if not self.labels:
            return None
        if self.kind == "regressor":
            return self.abs_error_sum / self.labels
        return self.correct / self.labels


def accuracy_window(site: str, doc: dict[str, Any]) -> AccuracyWindow | None:
    """The accuracy record of one site window (as the API schema validated it), or None
    when the window carries no ``feedback`` block."""
    block = doc.get("feedback")
    if not block:
        return None
    confusion: list[tuple[str, str, int]] = [
        (str(t), str(p), int(n)) for t, p, n in block.get("confusion", [])
    ]
    kind = str(block.get("kind") or "")
    return AccuracyWindow(
        site=site,
        window_id=str(doc["id"]),
        model=str(doc["model"]),
        version=int(doc["version"]),
        start_at=datetime.fromtimestamp(float(doc["start"]), UTC),
        end_at=datetime.fromtimestamp(float(doc["end"]), UTC),
        kind=kind,
        labels=int(block.get("labels", 0)),
        correct=sum(int(n) for t, p, n in confusion if t == p),
        abs_error_sum=float(block.get("abs_error_sum", 0.0)),
        squared_error_sum=float(block.get("squared_error_sum", 0.0)),
        confusion=[[t, p, n] for t, p, n in confusion],
        dropped={str(k): int(v) for k, v in dict(block.get("dropped", {})).items()},
    )


class Accuracy:
    """The accuracy service (protocol-free; routers call it from worker threads)."""

    def __init__(self, store: Store) -> None:
        self.repo = store.accuracy

    def ingest(self, site: str, windows: Iterable[dict[str, Any]]) -> int:
        """Store the ``feedback`` blocks of a site's windows; windows already stored are
        ignored (by site and window id), so a resent batch counts once."""
        records = [r for r in (accuracy_window(site, w) for w in windows) if r is not None]
        return self.repo.add(records)

    # --- figures ----------------------------------------------------------------------

    def latest(self, model: str) -> Sequence[AccuracyFigure]:
        """Per site x version, over the labels of the last :data:`LATEST_S` seconds."""
        since = datetime.now(UTC) - timedelta(seconds=LATEST_S)
        return [figure for figure, _ in self.figures(model, since=since)]

    def figures(
        self,
        model: str,
        *,
        site: str | None = None,
        version: int | None = None,
        since: datetime | None = None,
    ) -> list[tuple[AccuracyFigure, dict[str, int]]]:
        """Per site x version with labels: the figure and the dropped labels by reason."""
        check_name(model, "model name")
        sums: dict[tuple[str, int], _Sum] = {}
        for window in self.repo.windows(model=model, version=version, site=site, since=since):
            sums.setdefault((window.site, window.version), _Sum()).add(window)
        out = []
        for (s, v), total in sorted(sums.items()):
            value = total.value
            figure = AccuracyFigure(s, v, total.metric, value if value is not None else 0.0, 0)
            if value is not None:
                figure = AccuracyFigure(s, v, total.metric, round(value, 6), total.labels)
            out.append((figure, dict(total.dropped)))
        return out

    def merged(
        self, model: str, version: int, sites: Sequence[str], since: datetime
    ) -> AccuracyFigure | None:
        """One figure of ``model:version`` over ``sites`` since ``since`` (site ``*``);
        None when no label was joined there."""
        wanted = set(sites)
        total = _Sum()
        for window in self.repo.windows(model=model, version=version, since=since):
            if window.site in wanted:
                total.add(window)
        value = total.value
        if value is None:
            return None
        return AccuracyFigure("*", version, total.metric, value, total.labels)

    def series(
        self,
        model: str,
        *,
        site: str | None = None,
        version: int | None = None,
        since: datetime | None = None,
        bucket_s: float = 3600.0,
    ) -> list[AccuracyPoint]:
        """Per site x version, the figure of each ``bucket_s`` bucket (by window end) that
        holds labels, oldest first; buckets widen so a series has at most
        :data:`MAX_POINTS` points."""
        check_name(model, "model name")
        windows = self.repo.windows(model=model, version=version, site=site, since=since)
        if not windows:
            return []
        first, last = windows[0].end_at, windows[-1].end_at
        span = max((last - first).total_seconds(), 1.0)
        bucket = max(bucket_s, span / MAX_POINTS, 1.0)
        sums: dict[tuple[str, int, int], _Sum] = {}
        for window in windows:
            index = int(window.end_at.timestamp() // bucket)
            sums.setdefault((window.site, window.version, index), _Sum()).add(window)
        points = []
        for (s, v, index), total in sorted(sums.items(), key=lambda kv: (kv[0][2], kv[0][:2])):
            value = total.value
            if value is None:
                continue
            at = datetime.fromtimestamp(index * bucket, UTC)
            points.append(AccuracyPoint(s, v, total.metric, at, round(value, 6), total.labels))
        return points


class AccuracyCollector(Collector):
    """``modelfleet_accuracy{site,model,version,metric}`` on the hub's ``/metrics``: the
    :meth:`Accuracy.latest` figure of every model with labels."""

    def __init__(self, accuracy: Accuracy) -> None:
        self.accuracy = accuracy

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "modelfleet_accuracy",
            "Accuracy (classifiers) or mean absolute error (regressors) from sites' labels, "
            "last 7 days",
            labels=["site", "model", "version", "metric"],
        )
        try:
            for model in self.accuracy.repo.models():
                for f in self.accuracy.latest(model):
                    if f.count:
                        gauge.add_metric([f.site, model, str(f.version), f.metric], f.value)
        except Exception:  # a scrape must not fail because the store hiccups
            log.exception("accuracy for /metrics failed")
            return
        yield gauge
