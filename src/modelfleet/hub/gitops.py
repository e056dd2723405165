"""``modelfleet apply -f fleet.yaml``: the fleet declared in one file, applied as a diff.

The file declares sites (with labels), policies, per-site overrides and deployments. The
hub compares it with what it holds and changes only the differences, in an order that
keeps every intermediate state valid: sites first (deployments select them), then
policies (deployments are checked against them), overrides, and deployments last. Applying
the same file twice changes nothing the second time. With ``prune``, objects the file no
longer declares are removed (deployments and overrides before the sites they touch).

A new site's one-time enrollment token is returned once, in the change that created it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelfleet.errors import InvalidInput
from modelfleet.hub.deployments import Deployments, DeployRequest
from modelfleet.hub.policy import describe, parse_rule
from modelfleet.hub.rollout.gates import parse_gates
from modelfleet.hub.rollout.strategies import parse_strategy
from modelfleet.hub.selectors import parse_selector
from modelfleet.hub.sites import Sites, parse_labels
from modelfleet.refs import parse_ref


class SiteDecl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    labels: dict[str, str] = Field(default_factory=dict)


class DeploymentDecl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    model: str = Field(description="NAME@ALIAS or NAME:V")
    to: str = Field(default="", description="Site selector.")
    strategy: dict[str, Any] = Field(default_factory=dict)
    gates: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)


class OverrideDecl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site: str
    model: str = Field(description="NAME:V or NAME@ALIAS, resolved when applied.")
    reason: str = ""


class FleetDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sites: list[SiteDecl] = Field(default_factory=list)
    policies: list[dict[str, Any]] = Field(default_factory=list)
    overrides: list[OverrideDecl] = Field(default_factory=list)
    deployments: list[DeploymentDecl] = Field(default_factory=list)


@dataclass
class Change:
    kind: str  # site | policy | override | deployment
    name: str
    action: str  # create | update | delete
    detail: str = ""
    enrollment_token: str | None = None
    rollout: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "")}


@dataclass
class ApplyResult:
    dry_run: bool
    changes: list[Change] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "changed": bool(self.changes),
            "changes": [c.as_dict() for c in self.changes],
        }


def parse_fleet(raw: Any) -> FleetDoc:
    if not isinstance(raw, dict):
        raise InvalidInput("a fleet file is a mapping with sites, policies, overrides, deployments")
    try:
        doc = FleetDoc.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput(f"invalid fleet file: {describe(exc)}") from exc
    for what, names in (
        ("site", [s.name for s in doc.sites]),
        ("policy", [str(p.get("name")) for p in doc.policies]),
        ("deployment", [d.name or parse_ref(d.model).name for d in doc.deployments]),
        ("override", [f"{o.site}/{parse_ref(o.model).name}" for o in doc.overrides]),
    ):
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InvalidInput(f"fleet file declares {what}(s) twice: {', '.join(dupes)}")
    return doc


class FleetApplier:
    def __init__(self, sites: Sites, deployments: Deployments) -> None:
        self.sites = sites
        self.deployments = deployments

    def apply(
        self,
        raw: Any,
        *,
        prune: bool,
        dry_run: bool,
        actor: str,
        into: ApplyResult | None = None,
    ) -> ApplyResult:
        """Apply (or with ``dry_run`` only list) the changes; ``into`` collects them as
        they are made, so a caller still knows what happened when a later change fails."""
        doc = parse_fleet(raw)
        rules = [parse_rule(p) for p in doc.policies]
        for planned in doc.deployments:  # validate everything before the first change
            parse_strategy(planned.strategy)
            parse_gates(planned.gates)
            parse_selector(planned.to)
        result = into if into is not None else ApplyResult(dry_run)
        deployments = self.deployments
        changes = result.changes

        # Removals that free the way first: deployments and overrides no longer declared.
        if prune:
            declared = {d.name or parse_ref(d.model).name for d in doc.deployments}
            for d in deployments.list():
                if d.name not in declared:
                    if not dry_run:
                        self.deployments.remove(d.name)
                    changes.append(Change("deployment", d.name, "delete", f"model {d.model}"))
            pinned = {(o.site, parse_ref(o.model).name) for o in doc.overrides}
            for o in deployments.overrides():
                if (o.site, o.model) not in pinned:
                    if not dry_run:
                        self.deployments.unpin(o.site, o.model)
                    changes.append(Change("override", f"{o.site}/{o.model}", "delete"))

        existing_sites = {s.name: s for s in self.sites.list()}
        for site in doc.sites:
            labels = parse_labels(site.labels)
            have = existing_sites.get(site.name)
            if have is None:
                change = Change("site", site.name, "create", _labels_text(labels))
                if not dry_run:
                    _, change.enrollment_token = self.sites.add(site.name, labels)
                changes.append(change)
            elif have.labels != labels:
                if not dry_run:
                    self.sites.set_labels(site.name, labels)
                changes.append(
                    Change(
                        "site",
                        site.name,
                        "update",
                        f"labels {_labels_text(have.labels)} -> {_labels_text(labels)}",
                    )
                )

        current_rules = {p.name: p for p in deployments.policies()}
        for rule in rules:
            old_rule = current_rules.get(rule.name)
            if old_rule is None or (old_rule.kind, old_rule.spec) != (rule.kind, rule.spec()):
                if not dry_run:
                    deployments.put_policy(rule.name, rule.kind, rule.spec())
                action = "create" if old_rule is None else "update"
                changes.append(Change("policy", rule.name, action, rule.kind))
        if prune:
            for name in sorted(set(current_rules) - {r.name for r in rules}):
                if not dry_run:
                    deployments.remove_policy(name)
                changes.append(Change("policy", name, "delete"))

        current_pins = {(o.site, o.model): o for o in deployments.overrides()}
        for pin in doc.overrides:
            version = deployments.resolve(pin.model)
            old_pin = current_pins.get((pin.site, version.model))
            if old_pin is None or (old_pin.version, old_pin.reason) != (
                version.version,
                pin.reason,
            ):
                if not dry_run:
                    self.deployments.pin(pin.site, f"{version.model}:{version.version}", pin.reason)
                changes.append(
                    Change(
                        "override",
                        f"{pin.site}/{version.model}",
                        "create" if old_pin is None else "update",
                        f"{version.model}:{version.version}",
                    )
                )

        for decl in doc.deployments:
            request = DeployRequest(
                ref=decl.model,
                selector=decl.to,
                name=decl.name,
                strategy=decl.strategy,
                gates=decl.gates,
                params=decl.params,
            )
            plan = self.deployments.plan(request)
            old = deployments.find(plan.deployment)
            same = old is not None and (
                old.model,
                old.target_version,
                old.selector,
                old.strategy,
                old.gates,
                old.params,
            ) == (
                plan.model,
                plan.version,
                plan.selector,
                plan.strategy.model_dump(),
                plan.gates.model_dump(),
                decl.params,
            )
            if same:
                continue
            detail = f"{plan.model}:{plan.version} to {plan.selector or '(all sites)'}"
            change = Change(
                "deployment", plan.deployment, "create" if old is None else "update", detail
            )
            if not dry_run:
                _, rollout, _ = self.deployments.deploy(request, actor)
                change.rollout = rollout.id if rollout else None
            elif not plan.ok:
                change.detail += " — would be refused: " + "; ".join(
                    [v.detail for v in plan.violations] + plan.conflicts + plan.errors
                )
            changes.append(change)

        if prune:
            declared_sites = {s.name for s in doc.sites}
            for name in sorted(set(existing_sites) - declared_sites):
                if not dry_run:
                    self.sites.remove(name)
                changes.append(Change("site", name, "delete"))
            if not dry_run:
                self.deployments.sync()
        return result


def _labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "(no labels)"
