"""Telemetry on the hub: idempotent ingest, fleet status, fleet latency, drift.

Sites deliver batches of closed windows at least once; the store keeps each batch id and
window id once, so totals are exact whatever the retries. Everything shown is computed
from the stored windows on demand:

- request totals are sums over every window (exact);
- requests/s, error rate and latency percentiles cover the windows that ended in the
  last :data:`RECENT_S` seconds; percentiles come from the merged fixed-bucket latency
  histograms, so fleet-wide p50/p95/p99 are exact to within one bucket (<= 19 %);
- drift merges the sketches of the windows that ended within the model's ``window_s``
  (default one hour) per site and version and compares them with the reference profile.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from modelfleet.errors import InvalidInput, NotFound
from modelfleet.hub.accuracy import Accuracy
from modelfleet.hub.sites import Sites
from modelfleet.hub.store import Store
from modelfleet.hub.store.records import IngestResult, NewWindow, WindowRecord
from modelfleet.monitoring import drift
from modelfleet.monitoring.histograms import LATENCY_BOUNDS, dense, histogram_quantile, merge_counts
from modelfleet.monitoring.profiles import DatasetProfile
from modelfleet.refs import check_name

log = logging.getLogger("modelfleet.hub.telemetry")

#: Seconds of recent windows behind requests/s, error rate and percentiles.
RECENT_S = 60.0
#: How long a computed drift verdict is reused by status and metrics.
DRIFT_CACHE_S = 10.0
PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


def _rnd(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class _Agg:
    requests: int = 0
    errors: int = 0
    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        self.latency: list[int] = [0] * (len(LATENCY_BOUNDS) + 1)

    def add(self, window: WindowRecord) -> None:
        self.requests += window.requests
        self.errors += window.errors
        merge_counts(self.latency, dense(window.latency, len(LATENCY_BOUNDS) + 1))
        self.start = window.start_at if self.start is None else min(self.start, window.start_at)
        self.end = window.end_at if self.end is None else max(self.end, window.end_at)

    def view(self, now: datetime) -> dict[str, Any]:
        span = RECENT_S
        if self.start is not None:
            span = max(1e-3, min(RECENT_S, (now - self.start).total_seconds()))
        doc: dict[str, Any] = {
            "recent_requests": self.requests,
            "requests_per_s": round(self.requests / span, 3) if self.requests else 0.0,
            "error_rate": round(self.errors / self.requests, 6) if self.requests else None,
        }
        for name, q in PERCENTILES:
            doc[f"{name}_s"] = _rnd(histogram_quantile(self.latency, q, LATENCY_BOUNDS))
        return doc


def _merged_profiles(windows: Iterable[WindowRecord]) -> tuple[DatasetProfile, DatasetProfile]:
    inputs, outputs = DatasetProfile(), DatasetProfile()
    for window in windows:
        profiles = window.profiles or {}
        inputs.merge(DatasetProfile.from_dict({"columns": profiles.get("inputs", {})}))
        outputs.merge(DatasetProfile.from_dict({"columns": profiles.get("outputs", {})}))
    return inputs, outputs


def window_from_doc(doc: dict[str, Any]) -> NewWindow:
    """Validate one window as a site sent it (already shape-checked by the API schema)."""
    check_name(doc["model"], "model name")
    profiles = {"inputs": doc.get("inputs", {}), "outputs": doc.get("outputs", {})}
    for role, columns in profiles.items():
        if not isinstance(columns, dict):
            raise InvalidInput(f"window {doc['id']}: {role} must be an object")
        DatasetProfile.from_dict({"columns": columns})  # refuses anything unreadable
    latency = {str(k): int(v) for k, v in doc.get("latency", {}).items()}
    dense(latency, len(LATENCY_BOUNDS) + 1)
    start = datetime.fromtimestamp(float(doc["start"]), UTC)
    end = datetime.fromtimestamp(float(doc["end"]), UTC)
    if end < start:
        raise InvalidInput(f"window {doc['id']} ends before it starts")
    return NewWindow(
        window_id=str(doc["id"]),
        model=str(doc["model"]),
        version=int(doc["version"]),
        start_at=start,
        end_at=end,
        requests=int(doc["requests"]),
        errors=int(doc.get("errors", 0)),
        rows=int(doc.get("rows", 0)),
        latency_sum=float(doc.get("latency_sum", 0.0)),
        outcomes={str(k): int(v) for k, v in doc.get("outcomes", {}).items()},
        latency=latency,
        batch_sizes={str(k): int(v) for k, v in doc.get("batch_sizes", {}).items()},
        profiles=profiles,
    )


#: A site's clock within this of the hub's is taken as is (the estimate includes the batch's
#: transit time, and windows of healthy sites keep lining up on the wall-clock grid).
CLOCK_SKEW_TOLERANCE_S = 2.0
#: A site's clock further off than this is logged as a warning: once, and again only when
#: its offset has moved by as much since (a skewed site ships a batch every few seconds).
CLOCK_SKEW_WARN_S = 60.0


def rebase(windows: list[dict[str, Any]], sent_at: float | None, received_at: float) -> float:
    """Put the windows' times on the hub's clock, in place; returns the skew applied.

    The hub never trusts a site's clock for a decision (gates, drift and accuracy windows,
    retention all compare window times with the hub's ``now``): ``sent_at`` (the site's
    clock as the batch left) against ``received_at`` (the hub's as it arrived) measures how
    far the site's clock is off, and every window moves by that much. The estimate is off
    by the transit time at most, in the safe direction (a window looks a little later).
    Whatever the skew, a window cannot end after the hub received it: one that still does
    (an old site that sends no ``sent_at``, a clock that jumped) moves back to end at
    ``received_at``, its length kept. A ``sent_at`` that is no number (NaN, infinite; the
    API refuses those, this function must not depend on it) counts as missing: an infinite
    skew would turn the windows' times into NaN. See docs/monitoring.md, "Clock skew"."""
    skew = 0.0
    if (
        sent_at is not None
        and math.isfinite(sent_at)
        and abs(received_at - sent_at) > CLOCK_SKEW_TOLERANCE_S
    ):
        skew = received_at - sent_at
    for window in windows:
        start, end = float(window["start"]) + skew, float(window["end"]) + skew
        if end > received_at + CLOCK_SKEW_TOLERANCE_S:
            start, end = start - (end - received_at), received_at
        window["start"], window["end"] = max(start, 0.0), max(end, 0.0)
    return skew


class Telemetry:
    """The telemetry service (protocol-free; routers call it from worker threads)."""

    def __init__(self, store: Store, sites: Sites) -> None:
        self.sites = sites
        self.repo = store.telemetry
        #: Ground-truth counts from the windows' ``feedback`` blocks (hub/accuracy.py).
        self.accuracy = Accuracy(store)
        self._cache: dict[tuple[str, str, int], tuple[float, dict[str, Any]]] = {}
        self._cache_lock = threading.Lock()
        #: Bumped whenever cached verdicts go stale: a verdict computed from windows read
        #: before a bump is answered but not cached (it may predate the newest windows).
        self._generation = 0
        #: Per site, the skew last warned about (see :meth:`_note_skew`).
        self._warned_skew: dict[str, float] = {}

    # --- ingest --------------------------------------------------------------------------

    def ingest(
        self,
        site: str,
        batch_id: str,
        spool_id: str,
        dropped: tuple[int, int],
        windows: list[dict[str, Any]],
        *,
        sent_at: float | None = None,
    ) -> IngestResult:
        """Store a site's batch; ``sent_at`` (the site's clock at sending) rebases the
        windows onto the hub's clock first (:func:`rebase`)."""
        self.sites.get(site)
        skew = rebase(windows, sent_at, time.time())
        self._note_skew(site, skew)
        # A window with labels but no traffic (labels come after the fact) is accuracy
        # only: stored as traffic it would read as a silent site to the anomaly detector.
        traffic = [w for w in windows if w.get("requests") or not w.get("feedback")]
        parsed = [window_from_doc(w) for w in traffic]
        result = self.repo.ingest(site, batch_id, spool_id, dropped, parsed)
        self.accuracy.ingest(site, windows)
        # Verdicts cached for this site are stale once new windows arrive.
        keys = {(site, w.model, w.version) for w in parsed}
        with self._cache_lock:
            self._generation += 1
            for key in keys:
                self._cache.pop(key, None)
        return replace(result, clock_skew_s=skew)

    def _note_skew(self, site: str, skew: float) -> None:
        """Warn of a site's clock over :data:`CLOCK_SKEW_WARN_S` off the hub's once per
        episode (or when it moved by that much), and say when it is back: a warning per
        batch would be one every few seconds per skewed site, burying everything else."""
        with self._cache_lock:
            warned = self._warned_skew.get(site)
            if abs(skew) > CLOCK_SKEW_WARN_S:
                if warned is not None and abs(skew - warned) <= CLOCK_SKEW_WARN_S:
                    return
                self._warned_skew[site] = skew
            elif warned is None:
                return
            else:
                del self._warned_skew[site]
        if abs(skew) > CLOCK_SKEW_WARN_S:
            log.warning("site %s: clock %.0fs off the hub's; windows rebased", site, -skew)
        else:
            log.info("site %s: clock back within %.0fs of the hub's", site, CLOCK_SKEW_WARN_S)

    # --- reference profiles and thresholds -----------------------------------------------

    def set_reference(self, model: str, version: int, profile: Any, actor: str) -> dict[str, Any]:
        parsed = DatasetProfile.from_dict(profile)
        if not parsed.columns:
            raise InvalidInput("the reference profile has no columns")
        doc = parsed.to_dict()
        self.repo.set_reference(model, version, doc, actor)
        with self._cache_lock:
            self._generation += 1
            self._cache.clear()
        return self.describe_reference(model, version, doc)

    def describe_reference(
        self, model: str, version: int, doc: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        doc = doc if doc is not None else self.repo.get_reference(model, version)
        if doc is None:
            raise NotFound(f"version {model}:{version} has no reference profile")
        profile = DatasetProfile.from_dict(doc)
        return {
            "model": model,
            "version": version,
            "columns": {
                name: {"kind": col.kind, "count": col.count, "missing": col.missing}
                for name, col in sorted(profile.columns.items())
            },
            "labels": profile.labels,
            "profile": doc,
        }

    def thresholds(self, model: str) -> dict[str, float]:
        stored = self.repo.get_drift_settings(model)  # anomaly.* keys: hub/anomalies.py
        return {**drift.DEFAULT_THRESHOLDS, **{k: v for k, v in stored.items() if "." not in k}}

    def set_thresholds(self, model: str, values: dict[str, Any]) -> dict[str, float]:
        checked = drift.check_thresholds(values)
        self.repo.set_drift_settings(model, {**self.repo.get_drift_settings(model), **checked})
        with self._cache_lock:
            self._generation += 1
            self._cache.clear()
        return self.thresholds(model)

    # --- drift ----------------------------------------------------------------------------

    def drift(
        self, model: str, version: int | None = None, site: str | None = None
    ) -> dict[str, Any]:
        """Per site x version with traffic in the drift window: features and verdicts."""
        check_name(model, "model name")
        thresholds = self.thresholds(model)
        since = datetime.now(UTC) - timedelta(seconds=thresholds["window_s"])
        windows = self.repo.windows(
            site=site, model=model, version=version, since=since, with_profiles=True
        )
        groups: dict[tuple[str, int], list[WindowRecord]] = {}
        for window in windows:
            groups.setdefault((window.site, window.version), []).append(window)
        results = [
            self._compare(model, v, s, group, thresholds)
            for (s, v), group in sorted(groups.items())
        ]
        return {
            "model": model,
            "version": version,
            "site": site,
            "since": since,
            "thresholds": thresholds,
            "threshold_help": drift.THRESHOLD_HELP,
            "results": results,
        }

    def _compare(
        self,
        model: str,
        version: int,
        site: str,
        windows: list[WindowRecord],
        thresholds: dict[str, float],
    ) -> dict[str, Any]:
        reference_doc = self.repo.get_reference(model, version)
        base: dict[str, Any] = {
            "site": site,
            "model": model,
            "version": version,
            "windows": len(windows),
            "requests": sum(w.requests for w in windows),
            "reference": reference_doc is not None,
        }
        if reference_doc is None:
            return {**base, "drift": None, "drifted": [], "features": []}
        inputs, outputs = _merged_profiles(windows)
        reference = DatasetProfile.from_dict(reference_doc)
        features = drift.compare(reference, inputs, outputs, thresholds)
        verdicts = [f.drift for f in features if f.drift is not None]
        return {
            **base,
            "drift": any(verdicts) if verdicts else None,
            "drifted": [f.feature for f in features if f.drift],
            "features": [f.to_dict() for f in features],
        }

    def drift_summary(self, site: str, model: str, version: int) -> dict[str, Any]:
        """The cached verdict of one site x version (status and metrics poll it often)."""
        key = (site, model, version)
        now = time.monotonic()
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < DRIFT_CACHE_S:
                return hit[1]
            generation = self._generation
        found = self.drift(model, version, site)["results"]
        summary = (
            {"drift": found[0]["drift"], "drifted": found[0]["drifted"]}
            if found
            else {"drift": None, "drifted": []}
        )
        with self._cache_lock:
            if self._generation == generation:
                self._cache[key] = (now, summary)
        return summary

    # --- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Every site at a glance, plus fleet-wide figures per model version."""
        now = datetime.now(UTC)
        totals = self.repo.totals()
        recent = self.repo.windows(since=now - timedelta(seconds=RECENT_S))
        drops = self.repo.drops()
        per_key: dict[tuple[str, str, int], _Agg] = {}
        fleet: dict[tuple[str, int], _Agg] = {}
        for window in recent:
            per_key.setdefault((window.site, window.model, window.version), _Agg()).add(window)
            fleet.setdefault((window.model, window.version), _Agg()).add(window)
        by_site: dict[str, list[dict[str, Any]]] = {}
        for total in totals:
            agg = per_key.get((total.site, total.model, total.version), _Agg())
            drift_view = self.drift_summary(total.site, total.model, total.version)
            by_site.setdefault(total.site, []).append(
                {
                    "model": total.model,
                    "version": total.version,
                    "requests_total": total.requests,
                    "errors_total": total.errors,
                    "windows": total.windows,
                    "last_window_end": total.last_end,
                    **agg.view(now),
                    **drift_view,
                }
            )
        sites = []
        for record in self.sites.list():
            view = self.sites.view(record)
            models = by_site.pop(record.name, [])
            sites.append(self._site_row(view, models, drops.get(record.name, (0, 0))))
        for name, models in sorted(by_site.items()):  # telemetry of since-removed sites
            sites.append(self._site_row({"name": name, "removed": True}, models, drops.get(name)))
        fleet_rows = []
        for (model, version), agg in sorted(fleet.items()):
            fleet_rows.append({"model": model, "version": version, **agg.view(now)})
        return {"at": now, "recent_s": RECENT_S, "sites": sites, "fleet": fleet_rows}

    @staticmethod
    def _site_row(
        view: dict[str, Any], models: list[dict[str, Any]], dropped: tuple[int, int] | None
    ) -> dict[str, Any]:
        served = {
            m["name"]: m.get("active_version")
            for m in view.get("models", [])
            if m.get("active_version") is not None
        }
        rate = sum(m["requests_per_s"] for m in models)
        recent = sum(m["recent_requests"] for m in models)
        errors = sum((m["error_rate"] or 0) * m["recent_requests"] for m in models)
        p99s = [m["p99_s"] for m in models if m["p99_s"] is not None]
        return {
            "site": view["name"],
            "online": bool(view.get("online", False)),
            "last_seen": view.get("last_seen"),
            "labels": view.get("labels", {}),
            "serving": served,
            "requests_per_s": round(rate, 3),
            "error_rate": round(errors / recent, 6) if recent else None,
            "p99_s": max(p99s) if p99s else None,
            "requests_total": sum(m["requests_total"] for m in models),
            "drift": sorted(
                f"{m['model']}:{m['version']}/{f}" for m in models for f in m["drifted"]
            ),
            "dropped": {"windows": (dropped or (0, 0))[0], "requests": (dropped or (0, 0))[1]},
            "models": models,
        }
