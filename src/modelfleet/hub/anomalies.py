"""Anomalies on the hub: the detector of ``monitoring/anomaly.py`` over every site x model.

The service reads the windows sites shipped through the store's telemetry repository
only, and runs :func:`~modelfleet.monitoring.anomaly.detect` per site x model with the
model's settings. Results are computed on demand and reused for :data:`CACHE_S`
seconds, so ``modelfleet status``, ``/metrics`` and the rollout gate polling together
cost one pass.

Per-model settings live beside the model's drift-threshold overrides (the same row of
``drift_settings``, keys prefixed ``anomaly.``): no new table, and they go with the model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from modelfleet.hub.store.records import WindowRecord
from modelfleet.hub.store.repos.telemetry import TelemetryRepo
from modelfleet.monitoring.anomaly import (
    SETTING_NAMES,
    Anomaly,
    AnomalySettings,
    WindowStats,
    check_settings,
    detect,
)
from modelfleet.refs import check_name

log = logging.getLogger("modelfleet.hub")

#: Seconds a computed set of anomalies is reused.
CACHE_S = 10.0
#: Key prefix of the anomaly settings inside a model's drift settings row.
PREFIX = "anomaly."
#: How far back a listing may reach (the detector reads its history before that too).
MAX_SINCE_S = 7 * 86_400.0
DEFAULT_SINCE_S = 3600.0
_INTS = {"warmup", "history", "min_requests", "stuck_windows", "clear_buckets"}


def _stats(window: WindowRecord) -> WindowStats:
    profiles = window.profiles or {}
    return WindowStats(
        start=window.start_at.timestamp(),
        end=window.end_at.timestamp(),
        version=window.version,
        requests=window.requests,
        errors=window.errors,
        latency=window.latency,
        inputs=profiles.get("inputs", {}) or {},
        outputs=profiles.get("outputs", {}) or {},
    )


class Anomalies:
    """The anomaly service (protocol-free; routers call it from worker threads)."""

    def __init__(self, repo: TelemetryRepo, clock: Callable[[], float] = time.time) -> None:
        self.repo = repo
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[float, tuple[float, list[Anomaly]]] = {}

    # --- settings ----------------------------------------------------------------------

    def settings(self, model: str) -> AnomalySettings:
        """The settings in force for ``model`` (defaults merged with its overrides)."""
        stored = self.repo.get_drift_settings(model)
        values: dict[str, Any] = {}
        for key, value in stored.items():
            name = key.removeprefix(PREFIX)
            if key.startswith(PREFIX) and name in SETTING_NAMES:
                values[name] = int(value) if name in _INTS else value
        return AnomalySettings.model_validate(values)

    def set_settings(self, model: str, values: dict[str, Any]) -> AnomalySettings:
        """Override some settings of ``model``; the rest keep their values.
        ``InvalidInput`` for an unknown or out-of-bounds value, ``NotFound`` for no model."""
        check_name(model, "model name")
        merged = check_settings({**self.settings(model).model_dump(), **values})
        stored = {
            k: v for k, v in self.repo.get_drift_settings(model).items() if not k.startswith(PREFIX)
        }
        defaults = AnomalySettings().model_dump()
        for name, value in merged.model_dump().items():
            if value != defaults[name]:
                stored[PREFIX + name] = float(value)
        self.repo.set_drift_settings(model, stored)
        with self._lock:
            self._cache.clear()
        return merged

    # --- anomalies -----------------------------------------------------------------------

    def find(
        self,
        *,
        site: str | None = None,
        model: str | None = None,
        open_only: bool = False,
        since_s: float = DEFAULT_SINCE_S,
    ) -> list[Anomaly]:
        """Anomalies open now or ended within ``since_s`` seconds, oldest first."""
        since_s = min(max(float(since_s), 60.0), MAX_SINCE_S)
        found = self._all(since_s)
        return [
            a
            for a in found
            if (site is None or a.site == site)
            and (model is None or a.model == model)
            and (not open_only or a.open)
        ]

    def open_counts(self) -> dict[str, int]:
        """Open anomalies per site (what ``status`` and the gate need)."""
        counts: dict[str, int] = {}
        for a in self.find(open_only=True):
            counts[a.site] = counts.get(a.site, 0) + 1
        return counts

    def _all(self, since_s: float) -> list[Anomaly]:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(since_s)
            if hit is not None and now - hit[0] < CACHE_S:
                return hit[1]
        found = self._compute(since_s, now)
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if now - v[0] < CACHE_S}
            self._cache[since_s] = (now, found)
        return found

    def _compute(self, since_s: float, now: float) -> list[Anomaly]:
        cutoff = datetime.fromtimestamp(now, UTC) - timedelta(seconds=since_s)
        found: list[Anomaly] = []
        for model in sorted({t.model for t in self.repo.totals()}):
            settings = self.settings(model)
            lookback = since_s + (settings.history + 1) * settings.bucket_s
            windows = self.repo.windows(
                model=model,
                since=datetime.fromtimestamp(now - lookback, UTC),
                with_profiles=True,
            )
            by_site: dict[str, list[WindowStats]] = {}
            for window in windows:
                by_site.setdefault(window.site, []).append(_stats(window))
            for site, stats in sorted(by_site.items()):
                try:
                    detected = detect(stats, settings, site=site, model=model, now=now)
                except Exception:  # one site's odd telemetry must not hide every other's
                    log.exception("anomaly detection of %s at %s failed", model, site)
                    continue
                found.extend(a for a in detected if a.end is None or a.end >= cutoff)
        return sorted(found, key=lambda a: (a.start, a.site, a.model, a.metric))
