"""Telemetry retention: a background loop that folds old windows into per-site totals.

Every window a site sends is kept with its sketches, which is what drift, gates and
recent figures need; kept forever they would grow the hub's database by every site x
model x window. Past ``telemetry_retention_days`` a window's counts go into a roll-up row
and the window is deleted (``TelemetryRepo.compact``), so lifetime totals stay exact.
Compaction is idempotent and safe on every replica at once, so no leadership is needed.

Accuracy windows (``accuracy_windows``: the label counts sites ship with their telemetry,
``hub/accuracy.py``) follow the same horizon: past ``telemetry_retention_days`` they are
deleted (``AccuracyRepo.prune``), not folded into totals: gates, triggers and ``modelfleet
status`` read recent labels only (the last 7 days at most), and the accuracy API and
dashboard simply find nothing past the horizon, as with telemetry windows' sketches.

The same loop deletes audit entries past ``audit_retention_days`` (a year by default): the
log is append-only and written on every mutating call, so it too would grow forever.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from modelfleet.errors import ModelfleetError
from modelfleet.hub.store import AuditRepo, TelemetryRepo
from modelfleet.hub.store.repos.accuracy import AccuracyRepo
from modelfleet.loops import BackgroundLoop

log = logging.getLogger("modelfleet.hub.retention")

FIRST_RUN_DELAY_S = 60.0


class TelemetryRetention:
    """Runs :meth:`compact_now` soon after start, then every ``interval_s``, in a daemon
    thread."""

    def __init__(
        self,
        repo: TelemetryRepo,
        audit: AuditRepo,
        *,
        retention_days: float,
        audit_retention_days: float,
        interval_s: float,
        accuracy: AccuracyRepo | None = None,
    ) -> None:
        self.repo = repo
        self.audit = audit
        #: Pruned on the telemetry horizon; None (a hub built without it): not pruned.
        self.accuracy = accuracy
        self.retention = timedelta(days=retention_days)
        self.audit_retention = timedelta(days=audit_retention_days)
        self.interval_s = interval_s
        # Not at once: a starting hub first serves the sites reconnecting to it.
        self._loop = BackgroundLoop(
            "telemetry-retention",
            self._step,
            interval_s=interval_s,
            first_wait_s=min(interval_s, FIRST_RUN_DELAY_S),
            logger=log,
            failure_message="telemetry retention failed",
        )

    def compact_now(self, now: datetime | None = None) -> int:
        """Fold and delete every telemetry window that ended before the retention horizon
        (the count returned), delete the accuracy windows that did, and old audit entries."""
        at = now or datetime.now(UTC)
        folded = self.repo.compact(at - self.retention)
        if folded:
            log.info("telemetry retention: folded %d windows into per-site totals", folded)
        if self.accuracy is not None:
            gone = self.accuracy.prune(at - self.retention)
            if gone:
                log.info("telemetry retention: deleted %d accuracy windows", gone)
        pruned = self.audit.prune(at - self.audit_retention)
        if pruned:
            log.info(
                "audit retention: deleted %d entries older than %s", pruned, self.audit_retention
            )
        return folded

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def _step(self) -> None:
        try:
            self.compact_now()
        except ModelfleetError as exc:  # e.g. the database is briefly unreachable
            log.warning("telemetry retention: %s", exc.message)
