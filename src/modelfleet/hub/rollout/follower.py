"""The acting half of following an alias (the rules: :mod:`modelfleet.hub.rollout.follow`).

Called from the rollout controller's tick, so it runs on the leader only, resumes after any
restart from the rows alone, and starts each rollout with a compare-and-set.
"""

from __future__ import annotations

import logging
from datetime import datetime

from modelfleet.errors import Conflict, InvalidInput, NotFound
from modelfleet.hub.deployments import Deployments, DeployRequest
from modelfleet.hub.events import Events
from modelfleet.hub.rollout.follow import FOLLOW_ACTOR
from modelfleet.hub.store.records import DeploymentRecord, RolloutRecord
from modelfleet.refs import parse_ref

log = logging.getLogger("modelfleet.hub.rollout.follow")


class Follower:
    """Starts the rollouts following deployments owe; called by the controller's tick."""

    def __init__(self, deployments: Deployments, events: Events | None = None) -> None:
        self.deployments = deployments
        self.events = events

    def tick(self, now: datetime) -> list[RolloutRecord]:
        """Act on every following deployment whose alias moved since it last acted and
        that has no unfinished rollout; returns the rollouts started."""
        started: list[RolloutRecord] = []
        busy = self.deployments.active_rollouts()
        for d in self.deployments.list():
            if not d.follow or d.name in busy:
                continue  # a move during a rollout waits for it to end (latest wins)
            try:
                target = self.deployments.resolve(d.ref).version
            except NotFound:
                continue  # the alias was removed: nothing to follow (the view says so)
            if target == d.follow_version:
                continue  # done, or failed and not to be retried until the alias moves
            rollout = self._follow(d, target, now)
            if rollout is not None:
                started.append(rollout)
        return started

    def _follow(self, d: DeploymentRecord, target: int, now: datetime) -> RolloutRecord | None:
        request = DeployRequest(ref=d.ref, name=d.name, follow=True)
        try:
            record, rollout, _ = self.deployments.deploy(
                request, FOLLOW_ACTOR, if_unchanged=d.updated_at
            )
        except Conflict:
            return None  # another tick, replica or operator changed it first: re-read
        except (InvalidInput, NotFound) as exc:
            # Refused (a residency rule, no online site): noted, not retried every tick.
            if self.deployments.repo.record_follow(
                d.name, expected_updated_at=d.updated_at, version=target, note=exc.message
            ):
                log.warning("deployment %s cannot follow %s to v%d: %s", d.name, d.ref, target, exc)
                self._emit("deployment.follow_blocked", d, target, None, exc.message)
            return None
        self.deployments.store.audit.record(
            actor=FOLLOW_ACTOR,
            action="deploy.follow",
            object=d.name,
            outcome="ok",
            detail=f"{d.ref} moved to v{record.target_version}"
            + (f"; rollout {rollout.id}" if rollout else "; fleet already runs it"),
        )
        log.info("deployment %s follows %s to v%d", d.name, d.ref, record.target_version)
        if rollout is not None:
            self._emit("deployment.follow_started", d, record.target_version, rollout, "")
        return rollout

    def _emit(
        self,
        kind: str,
        d: DeploymentRecord,
        target: int,
        rollout: RolloutRecord | None,
        reason: str,
    ) -> None:
        if self.events is None:
            return
        payload = {
            "deployment": d.name,
            "model": d.model,
            "alias": parse_ref(d.ref).alias,
            "from_version": d.stable_version,
            "to_version": target,
            "rollout": rollout.id if rollout else None,
            "by": FOLLOW_ACTOR,
        }
        if reason:
            payload["reason"] = reason
        key = f"deployment/{d.name}/{kind}/{rollout.id if rollout else d.updated_at.isoformat()}"
        self.events.emit(kind, d.name, payload, key=key)
