"""The hub's events: every state change worth telling someone about, as a persisted log.

Emitters (the rollout controller, the federated coordinator, the site watcher below,
``hub key rotate``) call :meth:`Events.emit` with a *natural key* naming the change
itself (``rollout/r-3/history/1``): the log stores each key once, so a change observed
twice — a controller resumed after SIGKILL re-deriving what it did, two replicas for a
moment — is one event. Readers page through the log by id (``GET /api/v1/events``), hold
a stream (SSE) woken by :attr:`Events.bell`, or receive webhooks (``hub/webhooks.py``).

Event types, with their emitters (payload fields in ``docs/events.md``; a test,
``tests/docs/test_event_types_documented.py``, checks that this list, :data:`EVENT_TYPES`,
the docs' table and the types the code emits agree)::

    rollout.started  rollout.wave_passed  rollout.paused  rollout.resumed
    rollout.succeeded  rollout.failed  rollout.aborted  rollout.rolled_back
                                       (Events.rollout, from the row: the controller)
    rollout.awaiting_approval  rollout.approved          (hub/rollout/approval.py)
    deployment.follow_started  deployment.follow_blocked (hub/rollout/follower.py)
    site.offline  site.online                            (SiteWatch, below)
    fl.job_finished                                      (hub/federation/coordinator.py)
    key.rotated                                          (hub key rotate)
    model.registered  model.alias_moved  model.alias_removed   (hub/registry.py)
    drift.flagged  drift.cleared                         (hub/drift_events.py)
    anomaly.opened  anomaly.closed                       (hub/anomalies.py)
    schedule.fired  schedule.missed                      (hub/schedules.py)
    trigger.fired                                        (hub/triggers.py)
    evaluation.completed  evaluation.failed              (hub/evaluations.py)
    pipeline.started  pipeline.promoted  pipeline.kept  pipeline.failed   (hub/pipelines.py)
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from modelfleet.errors import InvalidInput, ModelfleetError
from modelfleet.hub.sites import Sites
from modelfleet.hub.store import Store
from modelfleet.hub.store.records import EventRecord, JobRow, RolloutRecord, SiteRecord
from modelfleet.hub.wakeups import Notifier

log = logging.getLogger("modelfleet.hub.events")

#: The documented event types; ``emit`` accepts any dotted name, but a type emitted and
#: not listed here (and in docs/events.md) fails tests/docs/test_event_types_documented.py.
EVENT_TYPES = (
    "rollout.started",
    "rollout.wave_passed",
    "rollout.paused",
    "rollout.resumed",
    "rollout.succeeded",
    "rollout.failed",
    "rollout.aborted",
    "rollout.rolled_back",
    "rollout.awaiting_approval",
    "rollout.approved",
    "deployment.follow_started",
    "deployment.follow_blocked",
    "site.offline",
    "site.online",
    "fl.job_finished",
    "key.rotated",
    "model.registered",
    "model.alias_moved",
    "model.alias_removed",
    "drift.flagged",
    "drift.cleared",
    "anomaly.opened",
    "anomaly.closed",
    "schedule.fired",
    "schedule.missed",
    "trigger.fired",
    "evaluation.completed",
    "evaluation.failed",
    "pipeline.started",
    "pipeline.promoted",
    "pipeline.kept",
    "pipeline.failed",
)

#: A type: dotted lower-case words (``rollout.wave_passed``); a pattern may end in ``.*``.
TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
MAX_PAYLOAD_BYTES = 8192
#: Kept this long, and never more than this many (those a webhook still owes stay).
RETENTION_DAYS = 30
MAX_EVENTS = 100_000

#: A rollout history entry's outcome -> the event it is.
_OUTCOME_EVENT = {
    "success": "rollout.wave_passed",
    "promote": "rollout.wave_passed",
    "fail": "rollout.failed",
    "inconclusive": "rollout.paused",
    "pause": "rollout.paused",
    "resume": "rollout.resumed",
    "abort": "rollout.aborted",
    "rollback": "rollout.rolled_back",
}
_BELL = "events"


def check_patterns(patterns: list[str], what: str = "event type") -> list[str]:
    """Exact types, ``family.*`` or ``*``; InvalidInput naming the bad one."""
    out: list[str] = []
    for raw in patterns:
        pattern = raw.strip()
        family = pattern.endswith(".*")
        base = pattern[:-2] if family else pattern
        word = family and re.match(r"^[a-z][a-z0-9_]*$", base) is not None
        if len(pattern) > 64 or (pattern != "*" and not (TYPE_RE.match(base) or word)):
            raise InvalidInput(
                f"invalid {what} {raw[:80]!r}: use a dotted type (rollout.failed), a family "
                "(rollout.*) or *, at most 64 characters"
            )
        out.append(pattern)
    return list(dict.fromkeys(out))


class Events:
    """Appends to the event log and wakes the streams held in this process."""

    def __init__(self, store: Store) -> None:
        self.repo = store.events
        #: Wakes the SSE streams of this process on a new event; closed at shutdown.
        self.bell = Notifier()

    def emit(
        self,
        type: str,
        subject: str,
        payload: dict[str, Any] | None = None,
        *,
        key: str | None = None,
    ) -> EventRecord | None:
        """Record an event; None if ``key`` (the change's natural id) was recorded before.

        Without a key every call is a new event. A payload larger than 8 KiB is replaced
        by a note saying so: events are notices, not data. Never raises for a store
        failure (logged): telling about a change must not undo the change.
        """
        if not TYPE_RE.match(type):
            raise InvalidInput(f"invalid event type {type!r}")
        body = dict(payload or {})
        size = len(json.dumps(body, default=str))
        if size > MAX_PAYLOAD_BYTES:
            body = {"truncated": True, "bytes": size}
        body = json.loads(json.dumps(body, default=str))
        try:
            event = self.repo.append(key or f"{type}/{uuid.uuid4().hex}", type, subject[:255], body)
        except ModelfleetError as exc:
            log.warning("event %s about %s not recorded: %s", type, subject, exc)
            return None
        if event is not None:
            log.info("event %d %s %s", event.id, type, subject)
            self.bell.notify(_BELL)
        return event

    async def wait(self, timeout: float) -> bool:
        """Wait for an event emitted by this process (or shutdown); False on timeout."""
        return await self.bell.wait(_BELL, timeout)

    def prune(self, now: datetime) -> int:
        return self.repo.prune(before=now - timedelta(days=RETENTION_DAYS), keep=MAX_EVENTS)

    # --- what the emitters derive ------------------------------------------------------

    def rollout(self, r: RolloutRecord) -> None:
        """Record every event a rollout's row implies (started, one per decision in its
        history, succeeded): idempotent, so the controller calls it after each transition
        and again for every rollout when it takes over — a transition whose event was lost
        to a SIGKILL is told then, and none twice."""
        base = {
            "rollout": r.id,
            "deployment": r.deployment,
            "model": r.model,
            "from_version": r.from_version,
            "to_version": r.to_version,
            "waves": len(r.waves),
        }
        self.emit("rollout.started", r.id, {**base, "by": r.created_by}, key=f"rollout/{r.id}")
        for index, entry in enumerate(r.history):
            kind = _OUTCOME_EVENT.get(str(entry.get("outcome")))
            if kind is None:
                continue
            detail = {
                **base,
                "wave": int(entry.get("step", 0)) + 1,
                "gate": entry.get("gate"),
                "message": entry.get("message", ""),
                "by": entry.get("by"),
            }
            if kind != "rollout.wave_passed":  # the row's reason is the latest decision's
                last = index == len(r.history) - 1
                detail["reason"] = r.reason if last else entry.get("message", "")
            self.emit(kind, r.id, detail, key=f"rollout/{r.id}/history/{index}")
        if r.state == "succeeded":
            self.emit(
                "rollout.succeeded",
                r.id,
                {**base, "reason": r.reason},
                key=f"rollout/{r.id}/succeeded",
            )

    def job_finished(self, job: JobRow) -> None:
        """A federated job reached completed, failed or aborted (once per job)."""
        self.emit(
            "fl.job_finished",
            job.id,
            {
                "job": job.id,
                "model": job.model,
                "state": job.state,
                "rounds": job.current_round,
                "result_version": job.result_version,
                "message": job.message,
            },
            key=f"fl/{job.id}/finished",
        )

    def key_rotated(self, kid: str, previous: str, revision: int) -> None:
        self.emit(
            "key.rotated",
            kid,
            {"key_id": kid, "previous": previous, "revision": revision},
            key=f"key/{kid}/rotated",
        )


class SiteWatch:
    """Turns "offline" — computed lazily from a site's last report — into
    ``site.offline`` / ``site.online`` events: the webhook loop calls :meth:`check` on the
    leader every pass and compares each site with what it last told.

    Keys make it restart-safe: an offline period is named by the ``last_seen`` it began
    after (``site/a/offline/<last_seen>``) and its end by the same (``site/a/online/...``),
    and what was last told is read back from the log on the first pass. A site never seen
    is neither; a site first seen online says nothing (it was never offline).
    """

    def __init__(self, events: Events, sites: Sites) -> None:
        self.events = events
        self.sites = sites
        self._told: dict[str, tuple[bool, str]] = {}  # site -> (online, offline since)
        self._watching_since: datetime | None = None

    def check(self, now: datetime) -> None:
        if self._watching_since is None:
            self._watching_since = now
        # A hub that was down heard no reports: it judges nobody offline before a whole
        # offline period has passed with it listening (else every restart flags the fleet).
        settled = (
            now - self._watching_since
        ).total_seconds() >= self.sites.settings.offline_after_s
        for site in self.sites.list():
            if site.decommissioned_at is not None or site.last_seen is None:
                continue
            online = self.sites.online(site, now)
            if online or settled:
                self._check(site, online)

    def _check(self, site: SiteRecord, online: bool) -> None:
        told = self._told.get(site.name)
        if told is None:
            last = self.events.repo.latest(site.name, ["site.offline", "site.online"])
            if last is not None and last.type == "site.offline":
                told = (False, str(last.payload.get("last_seen", "")))
            else:
                told = (True, "")
            self._told[site.name] = told
        if told[0] == online:
            return
        seen = site.last_seen.isoformat() if site.last_seen else ""
        if not online:
            self.events.emit(
                "site.offline",
                site.name,
                {"site": site.name, "last_seen": seen},
                key=f"site/{site.name}/offline/{seen}",
            )
            self._told[site.name] = (False, seen)
        else:
            self.events.emit(
                "site.online",
                site.name,
                {"site": site.name, "offline_since": told[1], "last_seen": seen},
                key=f"site/{site.name}/online/{told[1]}",
            )
            self._told[site.name] = (True, "")
