"""``drift.flagged`` / ``drift.cleared``: the drift verdicts of ``hub/telemetry.py`` told as
events, without anyone reading them.

A drift verdict is computed on demand (``GET /drift``, ``status``); nothing runs it when
nobody asks. :class:`DriftWatch` asks, every ``drift_check_interval_s`` (HubSettings,
``MODELFLEET_HUB_DRIFT_CHECK_INTERVAL_S``, default 60 s), riding the anomaly loop's pass
(``hub/anomalies.py``): one background pass over telemetry rather than another thread. It
judges only site x model x version series whose version has a reference profile and
whose latest window ended within the model's drift ``window_s`` — the same verdict
``modelfleet drift`` shows.

A series is *flagged* when its verdict turns true (some feature at or past its threshold)
and *cleared* when it turns false again (back within, or a threshold raised); "no
verdict" (too few samples, no traffic in the window) changes nothing. Each flag opens an
*episode*, numbered per series from 1; the keys name it
(``drift/<site>/<model>/<version>/<episode>/flagged`` and ``.../cleared``), and what was
last told is read back from the event log the first time a series is seen, so a restart
or a second replica (whose passes compute the same verdict) tells each change once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from modelfleet.hub.events import Events
from modelfleet.hub.telemetry import Telemetry

log = logging.getLogger("modelfleet.hub")

TYPES = ("drift.flagged", "drift.cleared")
#: Drifted features listed in a ``drift.flagged`` payload at most (events are notices).
MAX_FEATURES = 20


@dataclass(frozen=True)
class Told:
    """What the log last said about one series: flagged or not, in which episode."""

    flagged: bool
    episode: int


def subject(site: str, model: str, version: int) -> str:
    """The events' subject: ``plant-a/pump:3``."""
    return f"{site}/{model}:{version}"


class DriftWatch:
    """Compares each series' drift verdict with what it last told (like ``SiteWatch``)."""

    def __init__(
        self,
        events: Events,
        telemetry: Telemetry,
        *,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.events = events
        self.telemetry = telemetry
        self.interval_s = interval_s
        self._clock = clock
        self._checked_at: float | None = None
        self._told: dict[tuple[str, str, int], Told] = {}

    def check(self) -> None:
        """Judge every series with a reference, if ``interval_s`` passed since the last."""
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < self.interval_s:
            return
        self._checked_at = now
        repo = self.telemetry.repo
        latest: dict[tuple[str, int], datetime] = {}
        for total in repo.totals():
            if total.last_end is None:
                continue
            key = (total.model, total.version)
            latest[key] = max(latest.get(key, total.last_end), total.last_end)
        wall = datetime.now(UTC)
        for (model, version), last_end in sorted(latest.items()):
            try:
                window_s = self.telemetry.thresholds(model)["window_s"]
                if last_end < wall - timedelta(seconds=window_s):
                    continue  # nothing in the drift window: no verdict to change
                if repo.get_reference(model, version) is None:
                    continue
                report = self.telemetry.drift(model, version)
            except Exception:  # one model's odd profile must not hide every other's
                log.exception("drift check of %s:%s failed", model, version)
                continue
            for result in report["results"]:
                if result["drift"] is not None:
                    self._judge(result, report["thresholds"])

    def _judge(self, result: dict[str, Any], thresholds: dict[str, float]) -> None:
        site, model, version = str(result["site"]), str(result["model"]), int(result["version"])
        key = (site, model, version)
        told = self._told.get(key) or self._read_back(key)
        flagged = bool(result["drift"])
        if told.flagged == flagged:
            self._told[key] = told
            return
        episode = told.episode + 1 if flagged else told.episode
        base = {"site": site, "model": model, "version": version, "episode": episode}
        name = f"drift/{site}/{model}/{version}/{episode}"
        if flagged:
            drifted = [f for f in result["features"] if f.get("drift")][:MAX_FEATURES]
            payload = {
                **base,
                "drifted": [f["feature"] for f in drifted],
                "features": [
                    {
                        k: f.get(k)
                        for k in ("feature", "label", "role", "psi", "ks_pvalue", "js", "reasons")
                    }
                    for f in drifted
                ],
                "thresholds": {k: thresholds.get(k) for k in ("psi", "ks_pvalue", "js")},
                "windows": result["windows"],
                "requests": result["requests"],
            }
            event = self.events.emit("drift.flagged", subject(*key), payload, key=f"{name}/flagged")
        else:
            payload = {**base, "windows": result["windows"], "requests": result["requests"]}
            event = self.events.emit("drift.cleared", subject(*key), payload, key=f"{name}/cleared")
        if event is None:
            # Told already (another replica, or before a restart) or not recorded (a store
            # failure, logged): the log says which, on the next pass.
            self._told.pop(key, None)
        else:
            self._told[key] = Told(flagged, episode)

    def _read_back(self, key: tuple[str, str, int]) -> Told:
        last = self.events.repo.latest(subject(*key), TYPES)
        if last is None:
            return Told(False, 0)
        episode = last.payload.get("episode")
        return Told(last.type == "drift.flagged", int(episode) if isinstance(episode, int) else 0)
