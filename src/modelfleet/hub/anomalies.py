"""Anomalies on the hub: the detector of ``monitoring/anomaly.py`` over every site x model.

The service reads the windows sites shipped through the store's telemetry repository
only. It keeps one :class:`~modelfleet.monitoring.anomaly_series.SeriesState` per site x
model, fed by a background pass every ``anomaly_interval_s`` seconds (HubSettings,
``MODELFLEET_HUB_ANOMALY_INTERVAL_S``, default 10 s): a pass reads only the windows stored
since the last one (:meth:`TelemetryRepo.windows_after`, by primary key, so a window a
site ships late is read too), parses each once, and judges the buckets that settled.
:meth:`Anomalies.find` and :meth:`Anomalies.open_counts` answer from the last pass and never
compute on the request path, except the very first call before any pass (computed once
then, synchronously, so an answer is never "not computed yet"), and calls on a service whose
loop is not running (a tool or a test) whose last pass is older than :data:`CACHE_S`.

A series' state equals :func:`~modelfleet.monitoring.anomaly.detect` over its windows
ending after the series' origin: the pass time that first saw the model, minus the
listing default (:data:`DEFAULT_SINCE_S`) plus ``history + 1`` buckets, which is what the
from-scratch computation used to read. A window for a bucket already judged, a settings
change, or a series that failed rebuilds that series from the store (windows since its
origin; windows retention already deleted are gone, so after a restart an old anomaly
may read differently). Closed anomalies are kept :data:`MAX_SINCE_S`.

Per-model settings live beside the model's drift-threshold overrides (the same row of
``drift_settings``, keys prefixed ``anomaly.``): no new table, and they go with the model.

Events. Once given the event log (:meth:`Anomalies.tell`), each loop pass tells
``anomaly.opened`` for an anomaly it lists for the first time and ``anomaly.closed`` once
it has ended — only the loop's passes, so a request never writes. An anomaly is named by
its site, model, metric and start (``anomaly/<site>/<model>/<metric>/<start>/opened``):
a restarted hub, or a second replica (whose passes find the same anomalies), tells it
again under the same key, and the log keeps one. An anomaly this process told open that a
later pass no longer finds (a rebuild with windows that came late) is closed with
``withdrawn: true``. Only anomalies open or ended within
:data:`DEFAULT_SINCE_S` of the pass are told, so a hub's first pass does not replay a
week of closed ones. Other watchers that need a background pass over telemetry (the
drift watch, ``hub/drift_events.py``) ride the same loop (:meth:`Anomalies.also_each_pass`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from modelfleet.hub.events import Events
from modelfleet.hub.store.records import WindowRecord
from modelfleet.hub.store.repos.telemetry import TelemetryRepo
from modelfleet.loops import BackgroundLoop
from modelfleet.monitoring.anomaly import (
    SETTING_NAMES,
    Anomaly,
    AnomalySettings,
    WindowStats,
    check_settings,
)
from modelfleet.monitoring.anomaly_series import SeriesState
from modelfleet.refs import check_name

log = logging.getLogger("modelfleet.hub")

#: Seconds a pass is reused when no loop runs (a service used without :meth:`start`).
CACHE_S = 10.0
#: Key prefix of the anomaly settings inside a model's drift settings row.
PREFIX = "anomaly."
#: How far back a listing may reach; closed anomalies are kept this long.
MAX_SINCE_S = 7 * 86_400.0
DEFAULT_SINCE_S = 3600.0
#: Seconds an id missing between two read ones is asked for again: on PostgreSQL a
#: transaction may commit a lower id after a higher one was read.
GAP_S = 60.0
#: Windows read per query of a pass.
PAGE = 5000
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


def _lookback(settings: AnomalySettings) -> float:
    return DEFAULT_SINCE_S + (settings.history + 1) * settings.bucket_s


class Anomalies:
    """The anomaly service (protocol-free; routers call it from worker threads)."""

    def __init__(
        self,
        repo: TelemetryRepo,
        clock: Callable[[], float] = time.time,
        *,
        interval_s: float = 10.0,
    ) -> None:
        self.repo = repo
        self.interval_s = interval_s
        self._clock = clock
        self._pass_lock = threading.Lock()  # one pass at a time (loop, gate, first call)
        self._series: dict[tuple[str, str], SeriesState] = {}
        self._models: dict[str, tuple[AnomalySettings, float]] = {}  # settings, origin
        self._cursor = 0  # every id up to here was read (or is a gap below)
        self._gaps: dict[int, float] = {}  # ids missing below the cursor -> when first missed
        self._dirty: set[tuple[str, str]] = set()  # series to rebuild on the next pass
        self._rebuilt: set[int] = set()  # ids above the cursor a rebuild already read
        self._stale_models: set[str] = set()  # settings changed here: re-read next pass
        # The last pass's answer, replaced whole (readers never see a half-made one).
        self._snapshot: tuple[float, list[Anomaly], dict[str, int]] | None = None
        self._events: Events | None = None
        self._told: set[str] = set()  # keys of the events this process told (or found told)
        self._watchers: list[Callable[[], None]] = []
        self._open: dict[str, Anomaly] = {}  # told open by this process, by event name
        self._loop = BackgroundLoop(
            "anomalies",
            self._step,
            interval_s=interval_s,
            logger=log,
            failure_message="anomaly pass failed",
        )

    # --- the loop ------------------------------------------------------------------------

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def _step(self) -> None:
        self.refresh()
        self._announce()
        for watcher in self._watchers:
            try:
                watcher()
            except Exception:  # a failing watcher must not stop the anomaly pass
                log.exception("watcher %r of the anomaly loop failed", watcher)

    def tell(self, events: Events) -> None:
        """Tell ``anomaly.opened`` / ``anomaly.closed`` to ``events`` from the loop's passes."""
        self._events = events

    def also_each_pass(self, watcher: Callable[[], None]) -> None:
        """Run ``watcher`` after each loop pass (on the loop's thread; its errors logged)."""
        self._watchers.append(watcher)

    def _announce(self) -> None:
        events, snap = self._events, self._snapshot
        if events is None or snap is None:
            return
        passed, found, _ = snap
        cutoff = datetime.fromtimestamp(passed - DEFAULT_SINCE_S, UTC)
        still_open: dict[str, Anomaly] = {}
        for a in found:
            if a.end is not None and a.end < cutoff:
                continue
            name = f"anomaly/{a.site}/{a.model}/{a.metric}/{a.start.isoformat()}"
            opened = {**a.as_dict(), "end": None, "open": True}  # also when told late
            self._tell(events, "anomaly.opened", name, opened)
            if a.end is None:
                still_open[name] = a
            else:
                self._tell(events, "anomaly.closed", name, {**a.as_dict(), "withdrawn": False})
        # Told open, now gone: a rebuild with windows that came late found no anomaly there.
        for name, a in self._open.items():
            if name not in still_open and f"{name}/closed" not in self._told:
                self._tell(events, "anomaly.closed", name, {**a.as_dict(), "withdrawn": True})
        self._open = still_open
        if len(self._told) > 100_000:  # a week of a noisy fleet; re-told keys are no-ops
            self._told.clear()

    def _tell(self, events: Events, kind: str, name: str, payload: dict[str, Any]) -> None:
        key = f"{name}/{kind.split('.')[1]}"
        if key not in self._told:
            events.emit(kind, f"{payload['site']}/{payload['model']}", payload, key=key)
            self._told.add(key)

    @property
    def passed_at(self) -> float | None:
        """Epoch seconds of the last pass, None before the first."""
        snap = self._snapshot
        return None if snap is None else snap[0]

    def refresh_if_older(self, max_age_s: float) -> None:
        """Run a pass now unless the last one is at most ``max_age_s`` old (the rollout
        gate asks with one bucket: a pass is incremental, so this costs what the loop's
        does)."""
        passed = self.passed_at
        if passed is None or self._clock() - passed > max_age_s:
            self.refresh()

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
        with self._pass_lock:
            self._stale_models.add(model)
        self._loop.wake()
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
        """Anomalies open now or ended within ``since_s`` seconds of the last pass, oldest
        first (from the last pass: O(anomalies))."""
        since_s = min(max(float(since_s), 60.0), MAX_SINCE_S)
        passed, found, _ = self._current()
        cutoff = datetime.fromtimestamp(passed - since_s, UTC)
        return [
            a
            for a in found
            if (site is None or a.site == site)
            and (model is None or a.model == model)
            and (not open_only or a.open)
            and (a.end is None or a.end >= cutoff)
        ]

    def open_counts(self) -> dict[str, int]:
        """Open anomalies per site (what ``status`` and the gate need)."""
        return dict(self._current()[2])

    def _current(self) -> tuple[float, list[Anomaly], dict[str, int]]:
        snap = self._snapshot
        if snap is None and self._loop.running:
            # The loop's first pass reads every stored window (tens of seconds at fleet
            # scale): a request does not wait for it, it sees no anomaly yet and
            # ``passed_at`` None says why.
            return (self._clock(), [], {})
        if snap is None or (not self._loop.running and self._clock() - snap[0] >= CACHE_S):
            self.refresh()
            snap = self._snapshot
        if snap is None:  # unreachable: refresh always leaves one
            return (self._clock(), [], {})
        return snap

    # --- the pass ------------------------------------------------------------------------

    def refresh(self) -> None:
        """One incremental pass: read the windows stored since the last, judge what
        settled, publish the result."""
        with self._pass_lock:
            now = self._clock()
            if self._snapshot is None:
                self._first_pass(now)
            else:
                self._check_settings(now)
            self._read(now)
            for key in sorted(self._dirty):
                self._rebuild(key, now)
            self._dirty.clear()
            found: list[Anomaly] = []
            for key, state in list(self._series.items()):
                try:
                    if state.advance(now):
                        state.prune(now - MAX_SINCE_S)
                    if state.last_end < now - MAX_SINCE_S:
                        del self._series[key]
                        continue
                    found.extend(state.anomalies())
                except Exception:  # one site's odd telemetry must not hide every other's
                    log.exception("anomaly detection of %s at %s failed", key[1], key[0])
                    self._series.pop(key, None)
                    self._dirty.add(key)
            found.sort(key=lambda a: (a.start, a.site, a.model, a.metric))
            counts: dict[str, int] = {}
            for a in found:
                if a.open:
                    counts[a.site] = counts.get(a.site, 0) + 1
            self._snapshot = (now, found, counts)

    def _model(self, model: str, now: float) -> tuple[AnomalySettings, float]:
        known = self._models.get(model)
        if known is None:
            settings = self.settings(model)
            known = (settings, now - _lookback(settings))
            self._models[model] = known
        return known

    def _check_settings(self, now: float) -> None:
        """Settings changed (here or on another replica): rebuild that model's series."""
        for model, (old, _) in list(self._models.items()):
            settings = self.settings(model)
            if settings == old and model not in self._stale_models:
                continue
            self._models[model] = (settings, now - _lookback(settings))
            self._dirty.update(key for key in self._series if key[1] == model)
        self._stale_models.clear()

    def _first_pass(self, now: float) -> None:
        """Series by series from the store (one series' windows in memory at a time), the
        id cursor taken first so that nothing stored meanwhile is missed."""
        self._cursor = self.repo.max_window_id()
        for site, model in sorted({(t.site, t.model) for t in self.repo.totals()}):
            self._rebuild((site, model), now)

    def _read(self, now: float) -> None:
        self._gaps = {i: t for i, t in self._gaps.items() if now - t < GAP_S}
        also = sorted(self._gaps)
        while True:
            rows = self.repo.windows_after(self._cursor, also=also, limit=PAGE)
            also = []
            for wid, record in rows:
                self._gaps.pop(wid, None)
                if wid > self._cursor:
                    for missing in range(self._cursor + 1, min(wid, self._cursor + 1000)):
                        self._gaps.setdefault(missing, now)
                    self._cursor = wid
                if wid in self._rebuilt:
                    continue  # a rebuild read it already
                self._ingest(record, now)
            if len(rows) < PAGE:
                break
        self._rebuilt = {i for i in self._rebuilt if i > self._cursor}

    def _ingest(self, record: WindowRecord, now: float) -> None:
        _, origin = self._model(record.model, now)
        if record.end_at.timestamp() <= origin:
            return
        key = (record.site, record.model)
        if key in self._dirty:
            return  # rebuilt from the store below
        state = self._series.get(key)
        if state is None:
            state = SeriesState(record.site, record.model, self._models[record.model][0])
            self._series[key] = state
        try:
            if not state.add(_stats(record)):
                self._dirty.add(key)  # a late window for a judged bucket
        except Exception:
            log.exception("anomaly detection of %s at %s failed", key[1], key[0])
            self._dirty.add(key)

    def _rebuild(self, key: tuple[str, str], now: float) -> None:
        site, model = key
        settings, origin = self._model(model, now)
        self._series.pop(key, None)
        since = datetime.fromtimestamp(origin, UTC)
        state = SeriesState(site, model, settings)
        try:
            after = 0
            while True:
                rows = self.repo.windows_after(
                    after, site=site, model=model, since=since, limit=PAGE
                )
                for wid, window in rows:
                    if wid > self._cursor:
                        self._rebuilt.add(wid)  # stored since the cursor: not read twice
                    state.add(_stats(window))
                if len(rows) < PAGE:
                    break
                after = rows[-1][0]
            state.advance(now)  # keeps only the unsettled buckets' windows in memory
        except Exception:
            log.exception("anomaly detection of %s at %s failed", model, site)
            return
        if state.first is not None:
            self._series[key] = state
