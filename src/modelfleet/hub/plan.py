"""``deploy --plan``: what a deployment would do, computed without changing anything.

The same function plans the real deployment, so what the operator reviewed is exactly
what runs: which sites get which version (and what they run now), which are excluded and
why (selector, policy, override, offline, conflict), the waves, and every rule broken.

Every policy is listed with its verdict for this deployment (``pass``, ``refused`` or
``not applicable``, and why), because a plan that only says "accepted" cannot tell a rule
that passed from one that never matched: a residency rule written for ``EMEA`` while
versions record ``eu-west`` (which the site labels put in ``EU``) protects nothing, so the
plan warns about every rule that matches no model in the registry (no version trained on a
region it covers; a spread rule naming only unknown models).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelfleet.errors import InvalidInput
from modelfleet.hub.policy import (
    ResidencyRule,
    SpreadRule,
    Violation,
    check_residency,
    check_spread,
)
from modelfleet.hub.rollout.gates import Gates
from modelfleet.hub.rollout.strategies import Strategy, build_waves, describe_strategy
from modelfleet.hub.selectors import Selector, no_site_selected, parse_selector
from modelfleet.hub.store.records import (
    DeploymentRecord,
    OverrideRecord,
    SiteRecord,
    VersionRecord,
)
from modelfleet.routing.residency import region_jurisdictions


@dataclass(frozen=True)
class SiteTarget:
    site: str
    current: int | None  # the model version the site is assigned now
    version: int  # the version the deployment gives it
    online: bool
    labels: dict[str, str]


@dataclass(frozen=True)
class Exclusion:
    site: str
    reason: str  # selector | decommissioned | policy | override | offline | conflict
    detail: str


@dataclass(frozen=True)
class PolicyVerdict:
    """What one policy said about this deployment."""

    rule: str
    kind: str
    verdict: str  # pass | refused | not applicable
    detail: str


@dataclass
class Plan:
    deployment: str
    model: str
    ref: str
    version: int
    training_regions: list[str]
    selector: str
    strategy: Strategy
    gates: Gates
    from_version: int | None  # the deployment's stable version before this change
    targets: list[SiteTarget] = field(default_factory=list)
    excluded: list[Exclusion] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    waves: list[list[str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # "strategy", "gates": the deployment's
    policies: list[PolicyVerdict] = field(default_factory=list)
    #: Not refusals: rules that match no model, worth an operator's look.
    warnings: list[str] = field(default_factory=list)

    @property
    def rollout_needed(self) -> bool:
        return self.from_version != self.version

    @property
    def ok(self) -> bool:
        return not (self.violations or self.conflicts or self.errors)

    def as_dict(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "model": self.model,
            "ref": self.ref,
            "version": self.version,
            "training_regions": self.training_regions,
            "selector": self.selector or "(all sites)",
            "strategy": self.strategy.model_dump(),
            "strategy_text": describe_strategy(self.strategy),
            "gates": self.gates.model_dump(),
            "from_version": self.from_version,
            "rollout": self.rollout_needed,
            "targets": [t.__dict__ for t in self.targets],
            "excluded": [e.__dict__ for e in self.excluded],
            "violations": [v.as_dict() for v in self.violations],
            "conflicts": self.conflicts,
            "waves": self.waves,
            "errors": self.errors,
            "kept": self.kept,
            "policies": [v.__dict__ for v in self.policies],
            "warnings": self.warnings,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class PlanInputs:
    """Everything a plan reads, gathered by the caller in one place."""

    sites: list[SiteRecord]
    online: set[str]
    current: dict[str, int | None]  # site -> assigned version of the model
    deployments: list[DeploymentRecord]
    overrides: list[OverrideRecord]
    rules: list[ResidencyRule | SpreadRule]
    #: Every training region any version in the registry records (for "matches no model").
    known_regions: frozenset[str] = frozenset()
    #: Every model name in the registry.
    known_models: frozenset[str] = frozenset()


def make_plan(
    *,
    name: str,
    ref: str,
    version: VersionRecord,
    selector_text: str,
    strategy: Strategy,
    gates: Gates,
    existing: DeploymentRecord | None,
    inputs: PlanInputs,
) -> Plan:
    selector: Selector = parse_selector(selector_text)
    plan = Plan(
        deployment=name,
        model=version.model,
        ref=ref,
        version=version.version,
        training_regions=list(version.training_regions),
        selector=str(selector) if selector.terms else "",
        strategy=strategy,
        gates=gates,
        from_version=existing.stable_version if existing else None,
    )
    if existing is not None and existing.model != version.model:
        plan.errors.append(
            f"deployment {name!r} deploys model {existing.model!r}, not {version.model!r}; "
            "pick another --name"
        )
    pinned = {o.site: o for o in inputs.overrides if o.model == version.model}
    others = [
        (d, parse_selector(d.selector))
        for d in inputs.deployments
        if d.model == version.model and d.name != name
    ]
    selected: list[SiteRecord] = []
    for site in inputs.sites:
        why = selector.explain(site.labels)
        if why is not None:
            plan.excluded.append(Exclusion(site.name, "selector", why))
            continue
        if site.decommissioned_at is not None:
            plan.excluded.append(
                Exclusion(
                    site.name,
                    "decommissioned",
                    "decommissioned: assign it a model (`site assign`) to put it back in service",
                )
            )
            continue
        if site.name in pinned:
            o = pinned[site.name]
            plan.excluded.append(
                Exclusion(site.name, "override", f"pinned to {o.model}:{o.version} (`unpin`)")
            )
            continue
        clash = [d.name for d, sel in others if sel.matches(site.labels)]
        if clash:
            text = (
                f"site {site.name} is also selected by deployment(s) {', '.join(clash)} for "
                f"model {version.model}; a site runs one version of a model — narrow a "
                "selector or pin the site"
            )
            plan.conflicts.append(text)
            plan.excluded.append(Exclusion(site.name, "conflict", text))
            continue
        selected.append(site)
    if selected:  # with no site at all, "selects no site" is the one thing to say
        plan.violations = check_residency(
            inputs.rules, version.training_regions, selected, inputs.sites
        )
        plan.violations += check_spread(inputs.rules, version.model, selected)
    jurisdictions = region_jurisdictions(site.labels for site in inputs.sites)
    plan.policies = [
        _verdict(rule, version, plan.violations, len(selected), jurisdictions)
        for rule in inputs.rules
    ]
    plan.warnings = _unmatched(inputs, jurisdictions)
    refused = {v.site for v in plan.violations if v.site}
    movable = []
    for site in selected:
        if site.name in refused:
            detail = "; ".join(
                f"{v.rule}: {v.detail}" for v in plan.violations if v.site == site.name
            )
            plan.excluded.append(Exclusion(site.name, "policy", detail))
            continue
        online = site.name in inputs.online
        plan.targets.append(
            SiteTarget(
                site.name, inputs.current.get(site.name), version.version, online, site.labels
            )
        )
        if online:
            movable.append(site)
        else:
            plan.excluded.append(
                Exclusion(
                    site.name,
                    "offline",
                    "not in the waves; gets the version once the rollout succeeds and the "
                    "site is back",
                )
            )
    if not selected and not plan.errors:
        plan.errors.append(no_site_selected(selector, inputs.sites))
    elif plan.rollout_needed and not plan.violations and not plan.conflicts:
        try:
            plan.waves = build_waves(strategy, movable)
        except InvalidInput as exc:
            plan.errors.append(exc.message)
    return plan


def _verdict(
    rule: ResidencyRule | SpreadRule,
    version: VersionRecord,
    violations: list[Violation],
    selected: int,
    jurisdictions: Mapping[str, frozenset[str]],
) -> PolicyVerdict:
    """The verdict of one rule, in words an operator can act on."""
    mine = [v for v in violations if v.rule == rule.name]
    if isinstance(rule, ResidencyRule):
        allowed = ",".join(rule.allowed_jurisdictions)
        if mine and mine[0].site is None:
            return PolicyVerdict(rule.name, rule.kind, "refused", mine[0].detail)
        covered = rule.covers(version.training_regions, jurisdictions)
        if not covered:
            inside = sorted(r for r, js in jurisdictions.items() if js & set(rule.regions))
            also = f" (and the site regions in it: {','.join(inside)})" if inside else ""
            trained = ",".join(version.training_regions) or "nothing recorded"
            return PolicyVerdict(
                rule.name,
                rule.kind,
                "not applicable",
                f"covers {','.join(rule.regions)}{also}; the version was trained on {trained}",
            )
        if mine:
            sites = ", ".join(str(v.site) for v in mine)
            return PolicyVerdict(
                rule.name,
                rule.kind,
                "refused",
                f"trained on {','.join(covered)} data: {rule.label} must be in ({allowed}); "
                f"refused at {sites}",
            )
        return PolicyVerdict(
            rule.name,
            rule.kind,
            "pass",
            f"trained on {','.join(covered)} data: all {selected} selected site(s) have "
            f"{rule.label} in ({allowed})",
        )
    if rule.models and version.model not in rule.models:
        return PolicyVerdict(
            rule.name, rule.kind, "not applicable", f"only for {','.join(rule.models)}"
        )
    if mine:
        return PolicyVerdict(rule.name, rule.kind, "refused", mine[0].detail)
    return PolicyVerdict(
        rule.name,
        rule.kind,
        "pass",
        f"at least {rule.min_distinct} distinct {rule.label} values among the selected sites",
    )


def _unmatched(inputs: PlanInputs, jurisdictions: Mapping[str, frozenset[str]]) -> list[str]:
    """Rules that match no model in the registry (a typo'd or differently spelled region,
    a spread rule for models that do not exist)."""
    warnings = []
    known = list(inputs.known_regions)
    for rule in inputs.rules:
        if isinstance(rule, ResidencyRule) and not rule.covers(known, jurisdictions):
            seen = ", ".join(sorted(inputs.known_regions)) or "none"
            warnings.append(
                f"residency rule {rule.name!r} matches no model: no version was trained on "
                f"{','.join(rule.regions)} (training regions recorded: {seen}); a region "
                "matches by name, or through the jurisdiction label of the sites carrying "
                "it as their region label (docs/residency.md)"
            )
        elif (
            isinstance(rule, SpreadRule)
            and rule.models
            and not inputs.known_models & set(rule.models)
        ):
            warnings.append(
                f"spread rule {rule.name!r} matches no model: none of "
                f"{','.join(rule.models)} is in the registry"
            )
    return warnings
