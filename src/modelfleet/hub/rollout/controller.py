"""The rollout controller: a persisted, idempotent state machine.

States::

    running --step passes, more waves--> running (step + 1)
    running --last step passes--------> succeeded   (deployment's stable version := new)
    running --a gate fails / a site---> failed      (every moved site back to its version)
              cannot activate
    running --no verdict by deadline--> paused      (inconclusive: a human decides)
    running|paused --pause/resume-----> paused|running
    running|paused --promote----------> running (step + 1) | succeeded
    running|paused --abort------------> aborted     (moved sites back)
    running|paused|succeeded --rollback-> rolled_back
    running --wave passes, the next needs approval--> paused (awaiting approval; approval.py)
    paused (awaiting approval) --approve--> running (the waiting wave starts)

Each tick also starts the rollouts of deployments that follow an alias which moved
(follower.py): leader only, like the rest, and a compare-and-set on the deployment.

Everything the controller knows lives in the rollout row; nothing is kept in memory
between ticks. Each transition is one compare-and-set on the row's ``seq`` (with the
deployment's stable version in the same transaction when it changes), and the sites'
assignments are *derived* from the rows by :meth:`Deployments.sync`, which is idempotent.
So a hub killed at any instant resumes exactly where it was: at worst the assignments of
the last transition were not yet written, and the first sync after the restart writes them.
A wave's bake time counts from ``step_started_at`` in the row, so it survives restarts too.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from modelfleet.crashpoints import crash_point
from modelfleet.errors import Conflict, InvalidInput, NotFound
from modelfleet.hub.anomalies import Anomalies
from modelfleet.hub.deployments import Deployments
from modelfleet.hub.events import Events
from modelfleet.hub.registry import Registry
from modelfleet.hub.rollout import approval
from modelfleet.hub.rollout.follower import Follower
from modelfleet.hub.rollout.gates import (
    Figures,
    Gates,
    GateSource,
    Verdict,
    accuracy_gated,
    evaluate,
    parse_gates,
)
from modelfleet.hub.rollout.progress import wave_progress
from modelfleet.hub.rollout.sources import TelemetryGateSource
from modelfleet.hub.rollout.strategies import Strategy, describe_strategy, parse_strategy
from modelfleet.hub.rollout.views import waves_view
from modelfleet.hub.sites import Sites
from modelfleet.hub.store import Leadership, Store
from modelfleet.hub.store.records import ACTIVE_STATES, RolloutChange, RolloutRecord
from modelfleet.hub.telemetry import Telemetry
from modelfleet.loops import BackgroundLoop
from modelfleet.settings import HubSettings

log = logging.getLogger("modelfleet.hub.rollout")

Action = Literal["pause", "resume", "promote", "abort", "rollback", "approve"]
ACTIONS: tuple[Action, ...] = ("pause", "resume", "promote", "abort", "rollback", "approve")


@dataclass(frozen=True)
class Decision:
    outcome: Literal["success", "fail", "inconclusive"]
    gate: str | None
    message: str
    verdict: Verdict | None = None

    def entry(self, step: int, at: datetime) -> dict[str, Any]:
        return {
            "step": step,
            "outcome": self.outcome,
            "gate": self.gate,
            "message": self.message,
            "figures": self.verdict.figures.as_dict() if self.verdict else None,
            "baseline": (
                self.verdict.baseline.as_dict() if self.verdict and self.verdict.baseline else None
            ),
            "baseline_p99_ms": self.verdict.baseline_p99_ms if self.verdict else None,
            "at": at.isoformat(),
        }


@dataclass(frozen=True)
class Measurement:
    """What the controller reads to judge a step: also what ``rollout status`` shows."""

    strategy: Strategy
    gates: Gates
    reported: dict[str, dict[str, Any]]  # site -> what it reports of the rollout's model
    elapsed_s: float
    pending: list[str]  # the step's sites not yet running the new version
    verdict: Verdict


#: Reasons an agent retries on its own (the hub itself was away, e.g. restarting): they mean
#: "not yet", not "this version cannot run here"; the progress deadline still bounds them.
TRANSIENT_ERRORS = frozenset({"hub_unreachable", "store_unavailable"})


class RolloutController:
    """Moves running rollouts along; operator actions go through the same CAS."""

    def __init__(
        self,
        deployments: Deployments,
        source: GateSource,
        leadership: Leadership,
        *,
        interval_s: float = 1.0,
        baseline_window_s: float = 600.0,
        full_sync_s: float = 10.0,
        events: Events | None = None,
    ) -> None:
        # Rollout rows belong to the deployments service: the controller reads and moves
        # them through its methods, and reads sites' reports from the sites service.
        self.deployments = deployments
        self.sites = deployments.sites
        self.source = source
        self.leadership = leadership
        self.interval_s = interval_s
        self.baseline_window_s = baseline_window_s
        self.full_sync_s = full_sync_s
        self._was_leader = False
        self._last_sync = 0.0
        # Every transition is told as an event (hub/events.py), keyed by what it was.
        self.events = events
        self._announced: set[str] = set()
        self.follower = Follower(deployments, events)
        self._loop = BackgroundLoop(
            "rollout-controller",
            self._step,
            interval_s=interval_s,
            logger=log,
            failure_message="rollout controller pass failed",
        )

    # --- the loop ------------------------------------------------------------------------

    def start(self) -> None:
        self._was_leader, self._last_sync = False, 0.0
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
        self.leadership.release()

    def _step(self) -> None:
        leader = self.leadership.poll()
        if leader:
            if not self._was_leader or time.monotonic() - self._last_sync >= self.full_sync_s:
                # On taking over (a restart, a failover) and now and then: make
                # every site's assignments match the persisted state.
                self.deployments.sync()
                self._last_sync = time.monotonic()
            if not self._was_leader:  # tell what a predecessor may not have (idempotent)
                self._announce_recent()
            self.tick()
        self._was_leader = leader

    def tick(self, now: datetime | None = None) -> list[RolloutRecord]:
        """Start what following deployments owe, then evaluate every running rollout
        once; returns the rollouts started or changed."""
        at = now or self.deployments.now()
        changed = self.follower.tick(at)
        for rollout in self.deployments.rollouts(states=ACTIVE_STATES):
            if rollout.id not in self._announced:
                self._announce(rollout)  # rollout.started, before anything it passes
            if rollout.state != "running":
                continue
            moved = self.advance(rollout, at)
            if moved is not None:
                changed.append(moved)
        return changed

    # --- one evaluation ------------------------------------------------------------------

    def measure(self, r: RolloutRecord, now: datetime) -> Measurement:
        """The current step's figures and the gates' verdict on them, as of ``now``."""
        strategy = parse_strategy(r.plan.get("strategy"))
        gates = parse_gates(r.plan.get("gates"))
        wave = r.waves[r.step]
        reported = self._reported(r.model)
        elapsed = (now - r.step_started_at).total_seconds()
        pending = [s for s in wave if reported.get(s, {}).get("active_version") != r.to_version]
        drift, anomalies = gates.max_drift is not None, gates.max_anomalies is not None
        if accuracy_gated(gates):  # only then: sources without accuracy keep working
            figures = self.source.figures(
                r.model, r.to_version, wave, r.step_started_at, drift=drift,
                anomalies=anomalies, accuracy=True, previous=r.from_version,
            )  # fmt: skip
        else:
            figures = self.source.figures(
                r.model, r.to_version, wave, r.step_started_at, drift=drift, anomalies=anomalies
            )
        baseline = None
        if gates.max_p99_ratio is not None and r.from_version is not None:
            baseline = self.source.baseline(
                r.model,
                r.from_version,
                wave,
                r.step_started_at,
                span_s=max(elapsed, 1.0),
                min_requests=max(gates.min_requests, 1),
                lookback_s=self.baseline_window_s,
            )
        verdict = evaluate(gates, figures, baseline)
        return Measurement(strategy, gates, reported, elapsed, pending, verdict)

    def decide(self, r: RolloutRecord, now: datetime) -> Decision | None:
        """The verdict on the current step, or None while it keeps baking."""
        m = self.measure(r, now)
        strategy, verdict, pending, elapsed = m.strategy, m.verdict, m.pending, m.elapsed_s
        for site in r.moved_sites():
            state = m.reported.get(site, {})
            error = state.get("error") or {}
            if (
                state.get("desired_version") == r.to_version
                and error
                and error.get("code") not in TRANSIENT_ERRORS
            ):
                return Decision(
                    "fail",
                    "activation",
                    f"site {site} could not activate {r.model}:{r.to_version}: "
                    f"{error.get('code')}: {error.get('message')}",
                )
        if verdict.outcome == "fail":
            return Decision("fail", verdict.gate, verdict.message, verdict)
        if not pending and verdict.outcome == "pass" and elapsed >= strategy.bake_s:
            return Decision("success", None, verdict.message, verdict)
        if elapsed >= strategy.progress_deadline_s:
            why = (
                f"site(s) {', '.join(pending)} not running {r.model}:{r.to_version}"
                if pending
                else f"too little traffic: {verdict.message}"
            )
            return Decision(
                "inconclusive",
                "progress_deadline",
                f"no verdict within {strategy.progress_deadline_s:g} s: {why}",
                verdict,
            )
        return None

    def advance(self, r: RolloutRecord, now: datetime) -> RolloutRecord | None:
        decision = self.decide(r, now)
        if decision is None:
            return None
        entry = decision.entry(r.step, now)
        last = r.step >= len(r.waves) - 1
        if decision.outcome == "success" and last:
            change = RolloutChange(
                state="succeeded",
                reason="every wave passed its gates",
                history_entry=entry,
                deployment_stable=(r.deployment, r.to_version),
            )
        elif decision.outcome == "success":
            change = approval.pause_before(r, entry, now) or RolloutChange(
                step=r.step + 1, step_started_at=now, history_entry=entry
            )
        elif decision.outcome == "fail":
            change = RolloutChange(
                state="failed",
                reason=f"wave {r.step + 1} failed gate {decision.gate}: {decision.message}; "
                "moved sites rolled back",
                history_entry=entry,
            )
        else:
            change = RolloutChange(
                state="paused", reason=f"inconclusive: {decision.message}", history_entry=entry
            )
        moved = self.deployments.transition(r, change)
        if moved is None:
            return None  # someone else decided first; the next tick re-reads
        # The wave's transition is committed, its assignments and events not yet written:
        # the restarted leader's first full sync writes them (once: sync writes only what
        # differs) and its announce tells the events the row implies (keyed: none twice).
        crash_point("hub.rollout.after_assign")
        self._announce(moved)
        # A wave moving on is news (INFO); a failed or paused rollout needs a look.
        level = logging.WARNING if moved.state == "failed" else logging.INFO
        if moved.state == "paused" and not moved.awaiting_approval:
            level = logging.WARNING
        log.log(level, "rollout %s: %s", r.id, moved.reason or f"wave {moved.step + 1} started")
        self.deployments.sync(self._sites(r))
        return moved

    def _announce(self, r: RolloutRecord) -> None:
        """Record the events the rollout's row implies (none twice: they are keyed)."""
        if self.events is not None:
            self.events.rollout(r)
            approval.announce(self.events, r)
            self._announced.add(r.id)

    def _announce_recent(self) -> None:
        since = self.deployments.now() - timedelta(days=1)
        for r in self.deployments.rollouts():
            if r.updated_at >= since:
                self._announce(r)

    # --- operator actions ----------------------------------------------------------------

    def act(self, rollout_id: str, action: str, actor: str) -> RolloutRecord:
        if action not in ACTIONS:
            raise InvalidInput(f"unknown rollout action {action!r}; use one of {ACTIONS}")
        for _ in range(5):
            r = self.get(rollout_id)
            change = self._change_for(r, action, actor)
            moved = self.deployments.transition(r, change)
            if moved is not None:
                self._announce(moved)
                self.deployments.sync(self._sites(r) if action != "rollback" else None)
                return moved
        raise Conflict(f"rollout {rollout_id} keeps changing under us; try again")

    def _change_for(self, r: RolloutRecord, action: str, actor: str) -> RolloutChange:
        now = self.deployments.now()
        entry = {"step": r.step, "outcome": action, "by": actor, "at": now.isoformat()}
        if action == "rollback" and r.state == "succeeded":
            latest = self.deployments.rollouts(deployment=r.deployment)
            if latest and latest[0].id != r.id:
                raise Conflict(
                    f"rollout {r.id} is not the deployment's latest ({latest[0].id}); "
                    "roll back that one, or deploy the version you want"
                )
            return RolloutChange(
                state="rolled_back",
                reason=f"rolled back by {actor} to {_version_text(r.model, r.from_version)}",
                history_entry=entry,
                deployment_stable=(r.deployment, r.from_version),
            )
        if r.state not in ACTIVE_STATES:
            raise Conflict(f"rollout {r.id} is {r.state}; {action} applies to a running rollout")
        approval.refuse_while_awaiting(r, action)
        if action == "approve":
            return approval.approve(r, actor, now)
        if action == "pause":
            if r.state == "paused":
                raise Conflict(f"rollout {r.id} is already paused")
            return RolloutChange(state="paused", reason=f"paused by {actor}", history_entry=entry)
        if action == "resume":
            if r.state == "running":
                raise Conflict(f"rollout {r.id} is already running")
            return RolloutChange(
                state="running", reason="", step_started_at=now, history_entry=entry
            )
        if action == "promote":
            if r.step >= len(r.waves) - 1:
                return RolloutChange(
                    state="succeeded",
                    reason=f"promoted by {actor}",
                    history_entry=entry,
                    deployment_stable=(r.deployment, r.to_version),
                )
            return RolloutChange(
                state="running",
                reason="",
                step=r.step + 1,
                step_started_at=now,
                history_entry=entry,
            )
        state = "aborted" if action == "abort" else "rolled_back"
        return RolloutChange(
            state=state, reason=f"{state.replace('_', ' ')} by {actor}", history_entry=entry
        )

    def list(self, states: tuple[str, ...] | None = None) -> list[RolloutRecord]:
        """Rollouts newest first, optionally only those in ``states``."""
        return self.deployments.rollouts(states=states)

    def get(self, rollout_id: str) -> RolloutRecord:
        r = self.deployments.rollout(rollout_id)
        if r is None:
            raise NotFound(f"rollout {rollout_id!r} does not exist (see `modelfleet rollout ls`)")
        return r

    # --- views ---------------------------------------------------------------------------

    def _reported(self, model: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for site in self.sites.list():
            for m in (site.report or {}).get("models", []):
                if isinstance(m, dict) and m.get("name") == model:
                    out[site.name] = m
        return out

    @staticmethod
    def _sites(r: RolloutRecord) -> builtins.list[str]:
        return [s for wave in r.waves for s in wave]

    def view(self, r: RolloutRecord) -> dict[str, Any]:
        reported = self._reported(r.model)
        waves = waves_view(r, reported)
        strategy = parse_strategy(r.plan.get("strategy"))
        return {
            "id": r.id,
            "deployment": r.deployment,
            "model": r.model,
            "from_version": r.from_version,
            "to_version": r.to_version,
            "state": r.state,
            "step": r.step + 1,
            "steps": len(r.waves),
            "step_started_at": r.step_started_at,
            "strategy": describe_strategy(strategy),
            "bake_s": strategy.bake_s,
            "progress_deadline_s": strategy.progress_deadline_s,
            "gates": r.plan.get("gates", {}),
            "progress": self._progress(r),
            "approval": approval.approval_view(r),
            "reason": r.reason,
            "waves": waves,
            "history": r.history,
            "created_by": r.created_by,
            "created_at": r.created_at,
            "updated_at": r.updated_at,
        }

    def _progress(self, r: RolloutRecord) -> dict[str, Any] | None:
        """The current wave gate by gate, for a rollout still running or paused (none while
        it awaits approval: the wave has not started)."""
        if r.state not in ACTIVE_STATES or r.awaiting_approval:
            return None
        now = self.deployments.now()
        m = self.measure(r, now)
        return wave_progress(
            wave=r.step + 1,
            gates=m.gates,
            verdict=m.verdict,
            elapsed_s=m.elapsed_s,
            bake_s=m.strategy.bake_s,
            deadline_s=m.strategy.progress_deadline_s,
            pending=m.pending,
            now=now,
        ).as_dict()

    def status(self) -> dict[str, Any]:
        return {
            "leader": self.leadership.leader,
            "leader_since": self.leadership.since,
            "election": self.leadership.backend,
            "gate_source": type(self.source).__name__,
        }


def _version_text(model: str, version: int | None) -> str:
    return f"{model}:{version}" if version is not None else f"no {model}"


__all__ = ["ACTIONS", "Decision", "Figures", "RolloutController"]


def build_rollouts(
    store: Store,
    registry: Registry,
    sites: Sites,
    notify: Callable[[str], None],
    settings: HubSettings,
    telemetry: Telemetry,
    source: GateSource | None = None,
    anomalies: Anomalies | None = None,
    *,
    events: Events | None = None,
) -> tuple[Deployments, RolloutController]:
    """The deployments service and its controller for one hub process; gates read the
    telemetry unless another ``source`` is given."""
    deployments = Deployments(store, registry, sites, notify)
    controller = RolloutController(
        deployments,
        source if source is not None else TelemetryGateSource(store, telemetry, anomalies),
        store.leadership("rollout controller"),
        interval_s=settings.rollout_interval_s,
        baseline_window_s=settings.rollout_baseline_window_s,
        events=events,
    )
    return deployments, controller
