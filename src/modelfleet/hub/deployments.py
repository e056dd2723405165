"""Deployments: model reference x site selector x strategy -> desired state per site.

A site's desired state for the models under deployments is *computed*, never edited by
hand: from the deployments that select the site, the rollout moving each of them, and
per-site overrides (which win). :meth:`Deployments.sync` writes the result through the
low-level primitive (``store.assignments``), touching only what differs, so it can run as
often as wanted — after every rollout transition, at controller start, after a crash —
and always converges on the same answer. That is what makes the controller restartable:
a transition is one compare-and-set, and the assignments follow from the state.

A model under any deployment or override is *managed*: its assignments at a site are
whatever the computation says, including removal. Other models stay as assigned by hand.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelfleet.errors import Conflict, InvalidInput, NotFound
from modelfleet.hub.desired import desired_for_site
from modelfleet.hub.plan import Plan, PlanInputs, make_plan
from modelfleet.hub.policy import (
    ResidencyRule,
    SpreadRule,
    check_residency,
    refuse,
    rule_from_record,
)
from modelfleet.hub.registry import Registry
from modelfleet.hub.rollout.follow import awaiting_reason, follow_state
from modelfleet.hub.rollout.gates import parse_gates
from modelfleet.hub.rollout.strategies import approval_wave, check_approval, parse_strategy
from modelfleet.hub.sites import Sites
from modelfleet.hub.store import Store
from modelfleet.hub.store.records import (
    ACTIVE_STATES,
    DeploymentRecord,
    OverrideRecord,
    PolicyRecord,
    RolloutChange,
    RolloutRecord,
    SiteRecord,
    VersionRecord,
)
from modelfleet.refs import check_name, parse_ref
from modelfleet.serving_params import check_serving_params

log = logging.getLogger("modelfleet.hub.deployments")


class DeployRequest(BaseModel):
    """What ``modelfleet deploy`` sends."""

    model_config = ConfigDict(extra="forbid")

    ref: str = Field(description="NAME@ALIAS or NAME:V (resolved now, at deploy time).")
    selector: str | None = Field(
        default=None,
        description="Site selector; empty selects every site. Omitted: a re-deploy keeps the "
        "deployment's selector (a new one selects every site).",
    )
    name: str | None = Field(default=None, description="Deployment name (default: the model).")
    strategy: dict[str, Any] | None = Field(
        default=None,
        description="Omitted: a re-deploy keeps the deployment's strategy (a new one is "
        "all-at-once). With `kind`: replaces it. Without `kind`: changes only the keys "
        "given (e.g. bake_s) of the deployment's strategy.",
    )
    gates: dict[str, Any] | None = Field(
        default=None,
        description="Omitted: a re-deploy keeps the deployment's gates (a new one has none). "
        "Given (even {}): replaces them.",
    )
    params: dict[str, Any] | None = Field(
        default=None,
        description="Serving parameters: max_batch_size (1-65536), max_batch_time_ms "
        "(0-60000), intra_op_threads (1-256). Omitted: a re-deploy keeps the deployment's "
        "(a new one has none); given (even {}): replaces them.",
    )
    follow: bool | None = Field(
        default=None,
        description="Roll out again whenever the ref's alias moves (NAME@ALIAS only). "
        "Omitted: a re-deploy keeps the deployment's (a new one does not follow; a NAME:V "
        "ref stops following).",
    )

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        try:
            return check_serving_params(value)
        except InvalidInput as exc:
            raise ValueError(exc.message) from exc


@dataclass(frozen=True)
class _Settings:
    """What a deploy request means once the deployment's kept settings fill its gaps."""

    strategy: dict[str, Any]
    gates: dict[str, Any]
    selector: str
    params: dict[str, Any]
    follow: bool
    kept: list[str]


def _kept_settings(request: DeployRequest, existing: DeploymentRecord | None) -> _Settings:
    """The strategy, gates, selector and serving parameters a deploy request means, and
    which of them it keeps.

    A re-deploy that names no strategy (no gates, no selector, no parameters) keeps the
    deployment's: redeploying a new version of a canary deployment must not quietly make it
    all-at-once, widen it to every site or drop its batching. A strategy without ``kind``
    amends the deployment's (``{"bake_s": 5}`` keeps the canary); one with ``kind``
    replaces it."""
    kept: list[str] = []
    strategy = request.strategy
    if existing is None:
        strategy = strategy or {}
    elif strategy is None:
        strategy = existing.strategy
        kept.append("strategy")
    elif "kind" not in strategy:
        strategy = {**existing.strategy, **strategy}
        kept.append("strategy")
    gates = request.gates
    if gates is None:
        gates = existing.gates if existing is not None else {}
        if existing is not None:
            kept.append("gates")
    selector = request.selector
    if selector is None:
        selector = existing.selector if existing is not None else ""
        if existing is not None:
            kept.append("selector")
    params = request.params
    if params is None:
        params = existing.params if existing is not None else {}
        if existing is not None:
            kept.append("params")
    follow = request.follow
    if follow is None:
        # Kept only while the ref still names an alias: deploying NAME:V pins a version.
        follow = existing is not None and existing.follow and "@" in request.ref
        if existing is not None and existing.follow and follow:
            kept.append("follow")
    return _Settings(strategy, gates, selector, params, follow, kept)


class Deployments:
    """The deployments service; protocol-free, called from API worker threads."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        sites: Sites,
        notify: Callable[[str], None],
    ) -> None:
        self.store = store
        self.repo = store.deployments
        self.registry = registry
        self.sites = sites
        self.notify = notify

    def now(self) -> datetime:
        """The store's clock: what deployment and rollout timestamps are written with."""
        return self.store.now()

    def resolve(self, ref: str) -> VersionRecord:
        """The version ``ref`` names now, as :meth:`deploy` and :meth:`pin` resolve it."""
        return self.registry.resolve(parse_ref(ref))

    # --- policies ------------------------------------------------------------------------

    def policies(self) -> list[PolicyRecord]:
        """Every residency and spread rule as stored, ordered by name."""
        return self.repo.list_policies()

    def put_policy(self, name: str, kind: str, spec: dict[str, Any]) -> tuple[PolicyRecord, bool]:
        """Create or replace a rule; the flag says whether anything changed. Rules are
        checked when a deployment is planned or a site pinned, not against what runs."""
        return self.repo.put_policy(name, kind, spec)

    def remove_policy(self, name: str) -> None:
        """Remove a rule; ``NotFound`` if there is none by that name."""
        self.repo.delete_policy(name)

    def rules(self) -> list[ResidencyRule | SpreadRule]:
        return [rule_from_record(p.name, p.kind, p.spec) for p in self.policies()]

    # --- planning and deploying ----------------------------------------------------------

    def _in_service(self) -> builtins.list[SiteRecord]:
        """The sites deployments may target: a decommissioned one is left alone until an
        operator assigns it a model."""
        return [s for s in self.sites.list() if s.decommissioned_at is None]

    def plan(self, request: DeployRequest) -> Plan:
        ref = parse_ref(request.ref)
        if request.follow and ref.alias is None:
            raise InvalidInput(
                f"--follow needs a NAME@ALIAS ref, not {request.ref!r}: a deployment follows "
                "an alias as it moves (e.g. machine-health@production); NAME:V names one "
                "version for good"
            )
        version = self.registry.resolve(ref)
        name = check_name(request.name or version.model, "deployment name")
        existing = self.repo.get_deployment(name)
        settings = _kept_settings(request, existing)
        strategy = parse_strategy(settings.strategy)
        gates = parse_gates(settings.gates)
        sites = self.sites.list()  # the plan names decommissioned sites as excluded
        current: dict[str, int | None] = {}
        for site in sites:
            mine = [a for a in self.store.assignments.list(site.name) if a.model == version.model]
            current[site.name] = mine[0].version if mine else None
        inputs = PlanInputs(
            sites=sites,
            online={s.name for s in sites if self.sites.online(s)},
            current=current,
            deployments=self.repo.list_deployments(),
            overrides=self.repo.list_overrides(),
            rules=self.rules(),
            **self._registry_words(),
        )
        plan = make_plan(
            name=name,
            ref=request.ref,
            version=version,
            selector_text=settings.selector,
            strategy=strategy,
            gates=gates,
            existing=existing,
            inputs=inputs,
        )
        plan.kept = settings.kept
        refusal = check_approval(strategy, len(plan.waves)) if plan.waves else None
        if refusal is not None:
            plan.errors.append(refusal)
        busy = self.active_rollouts().get(name)
        if busy is not None and plan.rollout_needed:
            # The store refuses it too (in the same transaction as the write); saying so in
            # the plan makes `deploy --plan` answer what `deploy` would.
            plan.conflicts.append(
                f"deployment {name!r} has rollout {busy.id} {busy.state}; promote, abort or "
                f"roll it back first (`modelfleet rollout status {busy.id}`)"
            )
        return plan

    def _registry_words(self) -> dict[str, frozenset[str]]:
        """Every model name and recorded training region, for the plan's "rule matches no
        model" warnings."""
        models = self.store.models.list_models()
        regions = {
            region
            for model in models
            for version in self.registry.versions(model.name)
            for region in version.training_regions
        }
        return {
            "known_models": frozenset(m.name for m in models),
            "known_regions": frozenset(regions),
        }

    def deploy(
        self, request: DeployRequest, actor: str, *, if_unchanged: datetime | None = None
    ) -> tuple[DeploymentRecord, RolloutRecord | None, Plan]:
        """Create or update a deployment; refuses on policy, conflict or an invalid plan.

        ``if_unchanged``: the deployment's ``updated_at`` the caller decided on (following
        an alias): ``Conflict`` if the row changed since, so nobody acts twice."""
        plan = self.plan(request)
        subject = f"deployment {plan.deployment} ({plan.model}:{plan.version})"
        if plan.violations:
            raise refuse(subject, plan.violations)
        if plan.conflicts:
            raise Conflict(f"{subject} conflicts: " + " | ".join(plan.conflicts))
        if plan.errors:
            raise InvalidInput(f"{subject}: " + "; ".join(plan.errors))
        existing = self.repo.get_deployment(plan.deployment)
        if if_unchanged is not None and (existing is None or existing.updated_at != if_unchanged):
            raise Conflict(f"deployment {plan.deployment!r} changed meanwhile; plan again")
        now = self.now()
        settings = _kept_settings(request, existing)
        record = DeploymentRecord(
            name=plan.deployment,
            model=plan.model,
            ref=request.ref,
            selector=plan.selector,
            strategy=plan.strategy.model_dump(),
            gates=plan.gates.model_dump(),
            params=settings.params,
            target_version=plan.version,
            stable_version=plan.from_version,
            created_at=existing.created_at if existing else now,
            updated_at=now,
            follow=settings.follow,
            follow_version=plan.version if settings.follow else None,
        )
        rollout = None
        if plan.rollout_needed:
            first = approval_wave(plan.strategy) == 1  # approved before any site moves
            rollout_id = self.repo.new_rollout_id()
            rollout = RolloutRecord(
                id=rollout_id,
                deployment=plan.deployment,
                model=plan.model,
                from_version=plan.from_version,
                to_version=plan.version,
                state="paused" if first else "running",
                step=0,
                step_started_at=now,
                plan={
                    "waves": plan.waves,
                    "previous": {t.site: t.current for t in plan.targets},
                    "strategy": plan.strategy.model_dump(),
                    "gates": plan.gates.model_dump(),
                    **({"awaiting_approval": 1} if first else {}),
                },
                history=[],
                reason=awaiting_reason(1, rollout_id) if first else "",
                seq=1,
                created_by=actor,
                created_at=now,
                updated_at=now,
            )
        self.repo.save_deployment(
            record, rollout, expected_updated_at=existing.updated_at if existing else None
        )
        self.sync()
        return record, rollout, plan

    def list(self) -> list[DeploymentRecord]:
        """Every deployment, ordered by name."""
        return self.repo.list_deployments()

    def find(self, name: str) -> DeploymentRecord | None:
        """The deployment of that name, or None: for callers to whom absence is no error."""
        return self.repo.get_deployment(name)

    def get(self, name: str) -> DeploymentRecord:
        record = self.repo.get_deployment(name)
        if record is None:
            raise NotFound(f"deployment {name!r} does not exist (see `modelfleet deployments`)")
        return record

    def remove(self, name: str) -> None:
        self.get(name)
        self.repo.delete_deployment(name)
        self.sync()

    def pin(self, site: str, ref: str, reason: str = "") -> OverrideRecord:
        """Pin ``site`` to a version of a model; wins over every deployment."""
        record = self.sites.get(site)
        version = self.registry.resolve(parse_ref(ref))
        violations = check_residency(
            self.rules(), version.training_regions, [record], self.sites.list()
        )
        if violations:
            raise refuse(f"override {site} -> {version.model}:{version.version}", violations)
        self.repo.put_override(record.name, version.model, version.version, reason)
        self.sync([record.name])
        return next(o for o in self.repo.list_overrides(record.name) if o.model == version.model)

    def overrides(self, site: str | None = None) -> builtins.list[OverrideRecord]:
        """Per-site pins ordered by site and model; only ``site``'s when given."""
        return self.repo.list_overrides(site)

    def unpin(self, site: str, model: str) -> None:
        self.repo.delete_override(check_name(site, "site name"), check_name(model, "model name"))
        self.sync([site])

    # --- desired state -------------------------------------------------------------------

    def rollouts(
        self, *, states: tuple[str, ...] | None = None, deployment: str | None = None
    ) -> builtins.list[RolloutRecord]:
        """Rollouts newest first, optionally only in ``states`` or of one deployment."""
        return self.repo.list_rollouts(states=states, deployment=deployment)

    def rollout(self, rollout_id: str) -> RolloutRecord | None:
        return self.repo.get_rollout(rollout_id)

    def transition(self, rollout: RolloutRecord, change: RolloutChange) -> RolloutRecord | None:
        """The rollout controller's one way to move a rollout: a compare-and-set on the
        row's ``seq`` (None when someone else moved it first). The caller syncs."""
        return self.repo.transition(rollout, change)

    def active_rollouts(self) -> dict[str, RolloutRecord]:
        return {r.deployment: r for r in self.rollouts(states=ACTIVE_STATES)}

    def sync(self, site_names: Iterable[str] | None = None) -> builtins.list[str]:
        """Write each site's computed desired state through ``store.assignments``.

        Only differences are written (each bumps the site's revision and wakes its
        long-poll). Returns the sites that changed.
        """
        deployments = self.repo.list_deployments()
        overrides = self.repo.list_overrides()
        active = self.active_rollouts()
        managed = {d.model for d in deployments} | {o.model for o in overrides}
        wanted = set(site_names) if site_names is not None else None
        changed = []
        for site in self._in_service():
            if wanted is not None and site.name not in wanted:
                continue
            desired, conflicts = desired_for_site(site, deployments, active, overrides)
            for text in conflicts:
                log.warning("desired state conflict: %s", text)
            current = {a.model: a for a in self.store.assignments.list(site.name)}
            touched = False
            for model in sorted(managed | set(desired)):
                want, have = desired.get(model), current.get(model)
                if want is None:
                    if have is not None and model in managed:
                        self.store.assignments.remove(site.name, model)
                        touched = True
                elif have is None or (have.version, have.ref, have.params) != (
                    want.version,
                    want.ref,
                    want.params,
                ):
                    self.store.assignments.set(
                        site.name, model, want.version, want.ref, want.params
                    )
                    touched = True
            if touched:
                changed.append(site.name)
                self.notify(site.name)
        return changed

    def view(self, record: DeploymentRecord) -> dict[str, Any]:
        active = self.active_rollouts().get(record.name)
        latest = self.rollouts(deployment=record.name)
        return {
            "name": record.name,
            "model": record.model,
            "ref": record.ref,
            "selector": record.selector or "(all sites)",
            "strategy": record.strategy,
            "gates": record.gates,
            "params": record.params,
            "target_version": record.target_version,
            "stable_version": record.stable_version,
            "rollout": active.id if active else (latest[0].id if latest else None),
            "rollout_state": active.state if active else (latest[0].state if latest else None),
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "follow": self._follow(record, latest[0] if latest else None),
        }

    def _follow(
        self, record: DeploymentRecord, latest: RolloutRecord | None
    ) -> dict[str, Any] | None:
        """Where a following deployment stands against its alias (None if it pins)."""
        if not record.follow:
            return None
        try:
            target: int | None = self.resolve(record.ref).version
        except NotFound:
            target = None  # the alias was removed
        return follow_state(record, target, latest).as_dict()
