"""Gate sources: where a rollout's health figures come from.

:class:`TelemetryGateSource` reads the windows the sites ship to the hub (the store's
``telemetry`` repository, which ``hub/telemetry.py`` fills) and merges them: request
and error counts add up, the fixed-bucket latency histograms merge by adding counts, and
the p99 is read from the merged histogram (within one bucket, ~19 %, of the exact value).
The drift figure is the largest per-feature statistic (PSI for numeric inputs, Jensen-
Shannon distance for categorical ones) the telemetry service computes at the step's sites
against the version's reference profile, over the service's own drift window. The
anomaly count is the number of open anomalies of the version at the step's sites
(``hub/anomalies.py``; a site's anomaly carries the version serving when it last fired),
from the service's last pass, redone first if it is older than one of the model's buckets.

:class:`NullGateSource` sees no traffic: gates that need traffic never pass, so a rollout
with such gates ends inconclusive at its progress deadline rather than passing blindly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from modelfleet.hub.accuracy import LATEST_S
from modelfleet.hub.rollout.gates import Figures
from modelfleet.hub.store import Store
from modelfleet.hub.store.records import WindowRecord
from modelfleet.monitoring.histograms import LATENCY_BOUNDS, dense, histogram_quantile, merge_counts

if TYPE_CHECKING:
    from modelfleet.hub.accuracy import Accuracy
    from modelfleet.hub.anomalies import Anomalies
    from modelfleet.hub.telemetry import Telemetry


class NullGateSource:
    """No monitoring data at all."""

    def baseline(
        self,
        model: str,
        version: int,
        sites: Sequence[str],
        before: datetime,
        *,
        span_s: float,
        min_requests: int,
        lookback_s: float,
    ) -> Figures:
        return Figures()

    def figures(
        self,
        model: str,
        version: int,
        sites: Sequence[str],
        since: datetime,
        until: datetime | None = None,
        *,
        drift: bool = False,
        anomalies: bool = False,
        accuracy: bool = False,
        previous: int | None = None,
    ) -> Figures:
        return Figures()


class TelemetryGateSource:
    """Figures merged from the telemetry windows stored on the hub; drift verdicts from
    the telemetry service when there is one (without it, the drift figure is unknown)."""

    def __init__(
        self,
        store: Store,
        telemetry: Telemetry | None = None,
        anomalies: Anomalies | None = None,
    ) -> None:
        self._repo = store.telemetry
        self._telemetry = telemetry
        self._anomalies = anomalies

    def figures(
        self,
        model: str,
        version: int,
        sites: Sequence[str],
        since: datetime,
        until: datetime | None = None,
        *,
        drift: bool = False,
        anomalies: bool = False,
        accuracy: bool = False,
        previous: int | None = None,
    ) -> Figures:
        wanted = set(sites)
        windows = [
            w
            for w in self._repo.windows(model=model, version=version, since=since)
            if w.site in wanted and (until is None or w.start_at < until)
        ]
        merged = _merge(windows)
        if drift:
            merged = replace(merged, drift=self._drift(model, version, wanted))
        if anomalies and self._anomalies is not None:
            # Fresh to one bucket: an older last pass is redone now (incremental, cheap).
            self._anomalies.refresh_if_older(self._anomalies.settings(model).bucket_s)
            found = self._anomalies.find(model=model, open_only=True)
            count = sum(1 for a in found if a.site in wanted and a.version == version)
            merged = replace(merged, anomalies=count)
        if accuracy and self._telemetry is not None:
            merged = _accuracy(self._telemetry.accuracy, merged, model, version, sites, since)
            if previous is not None:
                merged = _previous(self._telemetry.accuracy, merged, model, previous, sites)
        return merged

    def baseline(
        self,
        model: str,
        version: int,
        sites: Sequence[str],
        before: datetime,
        *,
        span_s: float,
        min_requests: int,
        lookback_s: float,
    ) -> Figures:
        wanted = set(sites)
        since = before - timedelta(seconds=lookback_s)
        candidates = [
            w
            for w in self._repo.windows(model=model, version=version, since=since)
            if w.site in wanted and w.start_at < before
        ]
        taken: list[WindowRecord] = []
        requests = 0
        # Newest first, until the windows taken cover as long as the new version has been
        # watched and hold enough requests: the baseline is what ran just before.
        for window in sorted(candidates, key=lambda w: w.start_at, reverse=True):
            taken.append(window)
            requests += window.requests
            spanned = (before - window.start_at).total_seconds()
            if spanned >= span_s and requests >= min_requests:
                break
        return _merge(taken)

    def _drift(self, model: str, version: int, sites: set[str]) -> float | None:
        if self._telemetry is None:
            return None
        worst: float | None = None
        for site in sorted(sites):
            for result in self._telemetry.drift(model, version, site)["results"]:
                for feature in result.get("features", []):
                    if feature.get("role") != "input":
                        continue
                    value = feature.get("psi") if feature.get("kind") == "numeric" else None
                    value = value if value is not None else feature.get("js")
                    if value is not None and (worst is None or value > worst):
                        worst = float(value)
        return worst


def _merge(windows: Sequence[WindowRecord]) -> Figures:
    """Counts add up; latency histograms merge bucket by bucket; p99 read from the merge."""
    requests = errors = 0
    merged: list[int] = []
    for window in windows:
        requests += window.requests
        errors += window.errors
        merge_counts(merged, dense(window.latency, len(LATENCY_BOUNDS) + 1))
    p99 = histogram_quantile(merged, 0.99, LATENCY_BOUNDS) if merged else None
    return Figures(requests=requests, errors=errors, p99_ms=None if p99 is None else p99 * 1e3)


def _accuracy(
    service: Accuracy,
    merged: Figures,
    model: str,
    version: int,
    sites: Sequence[str],
    since: datetime,
) -> Figures:
    """The new version's labels at the step's sites since the step started."""
    found = service.merged(model, version, sites, since)
    if found is None:
        return replace(merged, labels=0)
    return replace(merged, accuracy=found.value, accuracy_metric=found.metric, labels=found.count)


def _previous(
    service: Accuracy, merged: Figures, model: str, previous: int, sites: Sequence[str]
) -> Figures:
    """The previous version's labels at the same sites over the last ``LATEST_S`` seconds
    (its predictions are older than the step, and their labels may be older still)."""
    since = datetime.now(UTC) - timedelta(seconds=LATEST_S)
    before = service.merged(model, previous, sites, since)
    return replace(
        merged,
        previous_accuracy=before.value if before is not None else None,
        previous_labels=before.count if before is not None else 0,
    )
