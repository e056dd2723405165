"""Triggers: an action started when a condition holds, at most once per cooldown.

Conditions (``modelfleet.api.schedules.ConditionIn``):

- ``drift`` — drift above the model's thresholds (``modelfleet drift``'s verdict, from the
  telemetry service) at ``min_sites`` sites or more;
- ``anomaly`` — an open anomaly of the model (``modelfleet anomalies``), optionally of one
  metric and at least one severity;
- ``new_version`` — a version registered after the trigger was saved or last fired (the
  trigger remembers the newest version it has seen);
- ``accuracy_below`` — accuracy below ``floor`` (MAE above it for ``metric: mae``) at
  ``min_sites`` sites, read from an :class:`AccuracySource`; a hub without one refuses
  such a trigger.

Each pass (the :class:`~modelfleet.hub.schedules.Automation` loop, on the lease holder)
looks at every enabled trigger out of its cooldown; when its condition holds, it claims
the fire by a compare-and-set on the trigger's fire counter together with the fire row,
before acting, so two replicas seeing the held condition fire once. The cooldown then
keeps a condition that stays true from firing every pass. A fire emits ``trigger.fired``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from modelfleet.api.schedules import (
    AccuracyBelowCondition,
    AnomalyCondition,
    ConditionIn,
    DriftCondition,
    Fire,
    NewVersionCondition,
    Trigger,
    TriggerIn,
    TriggerSaved,
)
from modelfleet.errors import InvalidInput, ModelfleetError, NotFound
from modelfleet.hub.accuracy import AccuracyFigure
from modelfleet.hub.actions import INTERRUPTED, Actions, Firing, Outcome
from modelfleet.hub.anomalies import Anomalies
from modelfleet.hub.events import Events
from modelfleet.hub.registry import Registry
from modelfleet.hub.schedules import STALE_S, Clock, fire_view, process_owner, utc_now
from modelfleet.hub.store.records.schedules import FireRecord, TriggerRecord
from modelfleet.hub.store.repos.schedules import ScheduleRepo
from modelfleet.hub.telemetry import Telemetry
from modelfleet.refs import check_name

log = logging.getLogger("modelfleet.hub.triggers")

MAX_TRIGGERS = 500
#: The anomaly metrics the detector names (monitoring/anomaly.py).
ANOMALY_METRIC = re.compile(r"^(request_rate|error_rate|p99|output_.+|stuck:.+|missing:.+)$")
_SEVERITY_RANK = {"warning": 0, "critical": 1}
#: How long a model's drift verdict is reused by the trigger passes.
DRIFT_EVERY_S = 30.0


class AccuracySource(Protocol):
    """Where triggers read accuracy from (the hub's ground-truth service)."""

    def latest(self, model: str) -> Sequence[AccuracyFigure]:
        """The latest figure of each site x version of ``model``."""
        ...


@dataclass(frozen=True)
class Verdict:
    """Whether a condition holds now, why, and what it remembers if it fires."""

    held: bool
    reason: str
    state: dict[str, Any] = field(default_factory=dict)


class Triggers:
    """Triggers (save, list, remove, their fires) and the pass that fires them."""

    def __init__(
        self,
        repo: ScheduleRepo,
        events: Events,
        actions: Actions,
        registry: Registry,
        telemetry: Telemetry,
        anomalies: Anomalies,
        *,
        accuracy: AccuracySource | None = None,
        now: Clock = utc_now,
        owner: str | None = None,
    ) -> None:
        self.repo = repo
        self.events = events
        self.actions = actions
        self.registry = registry
        self.telemetry = telemetry
        self.anomalies = anomalies
        self.accuracy = accuracy
        self.now = now
        self.owner = owner or process_owner()
        self._drift_seen: dict[str, tuple[float, list[str]]] = {}

    # --- triggers ------------------------------------------------------------------

    def save(self, name: str, body: TriggerIn, actor: str) -> TriggerSaved:
        """Create or replace the trigger ``name``; InvalidInput naming the fault (an
        unknown model or metric, accuracy where no source is wired)."""
        check_name(name, "trigger name")
        state = self._check_condition(body.condition)
        existing = self.repo.list_triggers()
        previous = next((t for t in existing if t.name == name), None)
        if previous is None and len(existing) >= MAX_TRIGGERS:
            raise InvalidInput(f"at most {MAX_TRIGGERS} triggers; remove one first")
        action, made = self.actions.check(body.action, previous.action if previous else None)
        now = self.now()
        record = self.repo.save_trigger(
            TriggerRecord(
                name=name,
                condition=body.condition.model_dump(mode="json"),
                action=action,
                cooldown_s=body.cooldown_s,
                enabled=body.enabled,
                description=body.description,
                state=state,
                fires=previous.fires if previous else 0,
                last_fired_at=previous.last_fired_at if previous else None,
                created_by=previous.created_by if previous else actor,
                created_at=previous.created_at if previous else now,
                updated_at=now,
            )
        )
        return TriggerSaved(**self._view(record, None).model_dump(), secret=made)

    def get(self, name: str) -> Trigger:
        record = self.repo.get_trigger(check_name(name, "trigger name"))
        fires = self.repo.list_fires("trigger", name, limit=1)
        return self._view(record, fires[0] if fires else None)

    def list_triggers(self) -> list[Trigger]:
        latest = self.repo.latest_fires("trigger")
        return [self._view(t, latest.get(t.name)) for t in self.repo.list_triggers()]

    def remove(self, name: str) -> None:
        self.repo.delete_trigger(check_name(name, "trigger name"))

    def fires(self, name: str, limit: int = 100) -> list[Fire]:
        self.repo.get_trigger(check_name(name, "trigger name"))
        return [fire_view(f) for f in self.repo.list_fires("trigger", name, limit=limit)]

    def _view(self, t: TriggerRecord, last: FireRecord | None) -> Trigger:
        cooling = t.last_fired_at + timedelta(seconds=t.cooldown_s) if t.last_fired_at else None
        return Trigger(
            name=t.name,
            condition=t.condition,
            action=self.actions.build(t.action).public(),
            cooldown_s=t.cooldown_s,
            enabled=t.enabled,
            description=t.description,
            fires=t.fires,
            last_fired_at=t.last_fired_at,
            cooling_until=cooling if cooling and cooling > self.now() else None,
            last_fire=fire_view(last) if last else None,
            created_by=t.created_by,
            created_at=t.created_at,
            updated_at=t.updated_at,
        )

    def _model(self, model: str) -> int:
        """The model's latest version; InvalidInput for an unknown model."""
        check_name(model, "model name")
        try:
            return self.registry.model(model).latest_version
        except NotFound as exc:
            raise InvalidInput(f"unknown model {model!r}: push it first") from exc

    def _check_condition(self, c: ConditionIn) -> dict[str, Any]:
        """Refuse what cannot be watched; the condition's initial state."""
        latest = self._model(c.model)
        metric = c.metric if isinstance(c, AnomalyCondition) else None
        if metric is not None and not ANOMALY_METRIC.match(metric):
            raise InvalidInput(
                f"unknown anomaly metric {metric!r}: use request_rate, error_rate, "
                "p99, output_<column>, stuck:<feature> or missing:<feature>"
            )
        if isinstance(c, AccuracyBelowCondition) and self.accuracy is None:
            raise InvalidInput("accuracy is not available on this hub", code="unavailable")
        if isinstance(c, NewVersionCondition):
            return {"seen_version": latest}
        return {}

    # --- the pass ------------------------------------------------------------------

    def run_pass(self) -> None:
        """Look at every enabled trigger out of its cooldown once; fire those whose
        condition holds. One trigger's failure does not stop the others."""
        now = self.now()
        self._recover(now)
        for trigger in self.repo.list_triggers():
            if not trigger.enabled:
                continue
            last = trigger.last_fired_at
            if last is not None and (now - last).total_seconds() < trigger.cooldown_s:
                continue
            try:
                verdict = self.evaluate(trigger)
                if verdict.held:
                    self._fire(trigger, verdict, now)
            except ModelfleetError as exc:
                log.warning("trigger %s not judged: %s", trigger.name, exc.message)

    def evaluate(self, t: TriggerRecord) -> Verdict:
        """Whether the trigger's condition holds now (read-only)."""
        kind = t.condition.get("kind")
        model = str(t.condition.get("model"))
        if kind == "drift":
            c = DriftCondition.model_validate(t.condition)
            sites = self._drifted(model)
            return Verdict(
                len(sites) >= c.min_sites,
                f"drift on {model} at {len(sites)} site(s) (needs {c.min_sites}): "
                + (", ".join(sites[:20]) or "none"),
            )
        if kind == "anomaly":
            a = AnomalyCondition.model_validate(t.condition)
            found = [
                x
                for x in self.anomalies.find(model=model, open_only=True)
                if (a.metric is None or x.metric == a.metric)
                and _SEVERITY_RANK[x.severity] >= _SEVERITY_RANK[a.severity]
            ]
            where = ", ".join(f"{x.site} {x.metric} ({x.severity})" for x in found[:20])
            return Verdict(bool(found), f"{len(found)} open anomaly(ies) on {model}: {where}")
        if kind == "new_version":
            seen = int(t.state.get("seen_version", 0))
            latest = self._model(model)
            return Verdict(
                latest > seen,
                f"{model}:{latest} registered (last seen {seen})",
                {"seen_version": latest},
            )
        if kind == "accuracy_below":
            b = AccuracyBelowCondition.model_validate(t.condition)
            if self.accuracy is None:
                return Verdict(False, "accuracy is not available on this hub")
            worse = [
                f
                for f in self.accuracy.latest(model)
                if f.metric == b.metric
                and f.count >= b.min_count
                and (f.value < b.floor if b.metric == "accuracy" else f.value > b.floor)
            ]
            sites = sorted({f.site for f in worse})
            bound = "below" if b.metric == "accuracy" else "above"
            return Verdict(
                len(sites) >= b.min_sites,
                f"{b.metric} {bound} {b.floor:g} at {len(sites)} site(s) (needs "
                f"{b.min_sites}): "
                + (", ".join(f"{f.site} v{f.version} {f.value:.4g}" for f in worse[:20]) or "none"),
            )
        return Verdict(False, f"unknown condition {kind!r}")

    def _drifted(self, model: str) -> list[str]:
        """The sites where ``model`` drifts, re-read at most every :data:`DRIFT_EVERY_S`
        per model: a drift verdict merges the sketches of every site's windows, too much
        to redo for each trigger at every pass of a large fleet."""
        hit = self._drift_seen.get(model)
        if hit is not None and time.monotonic() - hit[0] < DRIFT_EVERY_S:
            return hit[1]
        results = self.telemetry.drift(model)["results"]
        sites = sorted({str(r["site"]) for r in results if r.get("drift")})
        self._drift_seen[model] = (time.monotonic(), sites)
        return sites

    def _fire(self, t: TriggerRecord, verdict: Verdict, now: datetime) -> None:
        kind = str(t.action.get("kind"))
        state = {**t.state, **verdict.state}
        fire = self.repo.claim_trigger_fire(
            t.name, t.fires, at=now, state=state, action=kind, owner=self.owner,
            reason=verdict.reason[:2000],
        )  # fmt: skip
        if fire is None:
            return  # another replica fired it first
        self._act(t, fire)

    def _act(self, t: TriggerRecord, fire: FireRecord) -> None:
        firing = Firing("trigger", t.name, fire.slot, fire.id, fire.reason)
        self._finish(t.name, t.condition, fire, self.actions.run(t.action, firing))

    def _finish(
        self,
        name: str,
        condition: dict[str, Any],
        fire: FireRecord,
        outcome: Outcome,
        state: str = "",
    ) -> None:
        state = state or ("fired" if outcome.ok else "failed")
        try:
            done = self.repo.finish_fire(
                fire.id, state=state, job=outcome.job, detail=outcome.detail, at=self.now()
            )
        except ModelfleetError as exc:
            log.info("trigger %s: outcome not recorded: %s", name, exc.message)
            return
        self.events.emit(
            "trigger.fired",
            name,
            {
                "trigger": name,
                "at": fire.slot.isoformat(),
                "condition": condition,
                "reason": fire.reason,
                "action": fire.action,
                "result": {"state": done.state, "job": done.job, "detail": done.detail},
            },
            key=f"trigger/{name}/{fire.slot.isoformat()}/fired",
        )

    def _recover(self, now: datetime) -> None:
        stale = self.repo.stale_fires(
            claimed_before=now - timedelta(seconds=STALE_S), not_owner=self.owner
        )
        for fire in (f for f in stale if f.kind == "trigger"):
            try:
                t = self.repo.get_trigger(fire.name)
            except ModelfleetError:
                continue
            if self.actions.build(t.action).rerunnable:
                self._act(t, fire)
            else:
                self._finish(t.name, t.condition, fire, INTERRUPTED, "interrupted")
