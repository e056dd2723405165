"""``modelfleet apply -f fleet.yaml``: the fleet declared in one file, applied as a diff.

The file declares sites (with labels), policies, per-site overrides, deployments, and the
closed loop: pipelines and schedules. The hub changes only the differences, in an order
that keeps every intermediate state valid: sites, policies, overrides, deployments,
pipelines, schedules (one may start a pipeline of the file). Applying the same file twice
changes nothing. With ``prune``, objects the file no longer declares are removed —
pipelines and schedules only when the file has their section (docs/pipelines.md).

A new site's one-time enrollment token is returned once, in the change that created it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelfleet.api.pipelines import PipelineIn
from modelfleet.api.schedules import ScheduleIn
from modelfleet.errors import InvalidInput, ModelfleetError
from modelfleet.hub.deployments import Deployments, DeployRequest
from modelfleet.hub.pipelines import Pipelines
from modelfleet.hub.policy import ResidencyRule, SpreadRule, describe, parse_rule
from modelfleet.hub.rollout.gates import parse_gates
from modelfleet.hub.rollout.strategies import parse_strategy
from modelfleet.hub.schedules import Schedules, check_cron
from modelfleet.hub.selectors import parse_selector
from modelfleet.hub.sites import Sites, parse_labels
from modelfleet.hub.store.records import ACTIVE_STATES, DeploymentRecord
from modelfleet.hub.store.records.schedules import ScheduleRecord
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
    follow: bool = Field(
        default=False,
        description="Roll out whenever the alias of `model` (NAME@ALIAS) moves.",
    )


class OverrideDecl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site: str
    model: str = Field(description="NAME:V or NAME@ALIAS, resolved when applied.")
    reason: str = ""


class PipelineDecl(PipelineIn):
    """A pipeline of the file: its name and the body of ``PUT /api/v1/pipelines/{name}``."""

    name: str = Field(min_length=1, max_length=64)


class ScheduleDecl(ScheduleIn):
    """A schedule of the file: its name and the body of ``PUT /api/v1/schedules/{name}``."""

    name: str = Field(min_length=1, max_length=64)


class FleetDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sites: list[SiteDecl] = Field(default_factory=list)
    policies: list[dict[str, Any]] = Field(default_factory=list)
    overrides: list[OverrideDecl] = Field(default_factory=list)
    deployments: list[DeploymentDecl] = Field(default_factory=list)
    #: None: the file has no such section (then ``prune`` leaves that kind alone).
    pipelines: list[PipelineDecl] | None = None
    schedules: list[ScheduleDecl] | None = None


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
        ("pipeline", [p.name for p in doc.pipelines or []]),
        ("schedule", [s.name for s in doc.schedules or []]),
    ):
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InvalidInput(f"fleet file declares {what}(s) twice: {', '.join(dupes)}")
    return doc


@dataclass
class Planned:
    """One change a kind's diff found: the line a dry run shows, and how to make it.

    ``refusal`` is what a dry run adds to the line when applying would be refused (a real
    apply raises instead)."""

    change: Change
    apply: Callable[[], object]  # what it answers is not used
    refusal: str = ""


class _Kind(Protocol):
    """One resource kind of the fleet file: its diff against the hub, as planned changes.

    Both methods are generators read one change at a time and each change is applied before
    the next is worked out, so a diff sees the changes made before it (a deployment's plan
    sees the sites and policies just applied)."""

    def upserts(self, doc: FleetDoc) -> Iterator[Planned]: ...

    def deletes(self, doc: FleetDoc) -> Iterator[Planned]: ...


#: The order that keeps every intermediate state valid: removals that free the way first
#: (deployments and overrides no longer declared), then sites (deployments select them),
#: policies (deployments are checked against them), overrides, deployments, and the sites
#: no longer declared last. ``True``: the step removes, and runs only with ``prune``.
_ORDER: tuple[tuple[str, bool], ...] = (
    ("schedule", True),
    ("pipeline", True),
    ("deployment", True),
    ("override", True),
    ("site", False),
    ("policy", False),
    ("policy", True),
    ("override", False),
    ("deployment", False),
    ("pipeline", False),
    ("schedule", False),
    ("site", True),
)


class FleetApplier:
    def __init__(
        self, sites: Sites, deployments: Deployments, *,
        pipelines: Pipelines | None = None, schedules: Schedules | None = None,
    ) -> None:  # fmt: skip
        """Without ``pipelines`` / ``schedules``, a file with those sections is refused."""
        self.sites = sites
        self.deployments = deployments
        self.pipelines = pipelines
        self.schedules = schedules

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
        for decl in doc.deployments:  # validate everything before the first change
            if decl.follow and parse_ref(decl.model).alias is None:
                raise InvalidInput(
                    f"deployment {decl.name or decl.model}: follow needs model: NAME@ALIAS, "
                    f"not {decl.model!r} (a NAME:V names one version for good)"
                )
            parse_strategy(decl.strategy)
            parse_gates(decl.gates)
            parse_selector(decl.to)
        for s in doc.schedules or []:
            check_cron(s.cron)
        if (doc.pipelines is not None and self.pipelines is None) or (
            doc.schedules is not None and self.schedules is None
        ):
            raise InvalidInput("this hub does not apply pipelines or schedules from a file")
        result = into if into is not None else ApplyResult(dry_run)
        kinds: dict[str, _Kind] = {
            "site": _SiteKind(self.sites),
            "policy": _PolicyKind(self.deployments, rules),
            "override": _OverrideKind(self.deployments),
            "deployment": _DeploymentKind(self.deployments, actor),
        }
        if self.pipelines is not None:
            kinds["pipeline"] = _PipelineKind(self.pipelines, actor)
        if self.schedules is not None:
            kinds["schedule"] = _ScheduleKind(self.schedules, self.pipelines, actor)
        for kind_name, removes in _ORDER:
            if removes and not prune:
                continue
            kind = kinds.get(kind_name)
            if kind is None:
                continue
            for planned in kind.deletes(doc) if removes else kind.upserts(doc):
                if not dry_run:
                    planned.apply()
                elif planned.refusal:
                    planned.change.detail += " — would be refused: " + planned.refusal
                result.changes.append(planned.change)
        if prune and not dry_run:
            self.deployments.sync()
        return result


class _SiteKind:
    def __init__(self, sites: Sites) -> None:
        self.sites = sites

    def upserts(self, doc: FleetDoc) -> Iterator[Planned]:
        existing = {s.name: s for s in self.sites.list()}
        for site in doc.sites:
            labels = parse_labels(site.labels)
            have = existing.get(site.name)
            if have is None:
                change = Change("site", site.name, "create", _labels_text(labels))
                yield Planned(change, partial(self._add, change, labels))
            elif have.labels != labels:
                detail = f"labels {_labels_text(have.labels)} -> {_labels_text(labels)}"
                yield Planned(
                    Change("site", site.name, "update", detail),
                    partial(self.sites.set_labels, site.name, labels),
                )

    def _add(self, change: Change, labels: dict[str, str]) -> None:
        # The one-time enrollment token is answered once, in the change that made the site.
        _, change.enrollment_token = self.sites.add(change.name, labels)

    def deletes(self, doc: FleetDoc) -> Iterator[Planned]:
        declared = {s.name for s in doc.sites}
        for name in sorted({s.name for s in self.sites.list()} - declared):
            yield Planned(Change("site", name, "delete"), partial(self.sites.remove, name))


class _PolicyKind:
    def __init__(self, deployments: Deployments, rules: list[ResidencyRule | SpreadRule]) -> None:
        self.deployments = deployments
        self.rules = rules

    def upserts(self, doc: FleetDoc) -> Iterator[Planned]:
        current = {p.name: p for p in self.deployments.policies()}
        for rule in self.rules:
            old = current.get(rule.name)
            if old is None or (old.kind, old.spec) != (rule.kind, rule.spec()):
                action = "create" if old is None else "update"
                yield Planned(
                    Change("policy", rule.name, action, rule.kind),
                    partial(self.deployments.put_policy, rule.name, rule.kind, rule.spec()),
                )

    def deletes(self, doc: FleetDoc) -> Iterator[Planned]:
        current = {p.name for p in self.deployments.policies()}
        for name in sorted(current - {r.name for r in self.rules}):
            yield Planned(
                Change("policy", name, "delete"), partial(self.deployments.remove_policy, name)
            )


class _OverrideKind:
    def __init__(self, deployments: Deployments) -> None:
        self.deployments = deployments

    def upserts(self, doc: FleetDoc) -> Iterator[Planned]:
        current = {(o.site, o.model): o for o in self.deployments.overrides()}
        for pin in doc.overrides:
            version = self.deployments.resolve(pin.model)
            old = current.get((pin.site, version.model))
            if old is None or (old.version, old.reason) != (version.version, pin.reason):
                ref = f"{version.model}:{version.version}"
                yield Planned(
                    Change(
                        "override",
                        f"{pin.site}/{version.model}",
                        "create" if old is None else "update",
                        ref,
                    ),
                    partial(self.deployments.pin, pin.site, ref, pin.reason),
                )

    def deletes(self, doc: FleetDoc) -> Iterator[Planned]:
        pinned = {(o.site, parse_ref(o.model).name) for o in doc.overrides}
        for o in self.deployments.overrides():
            if (o.site, o.model) not in pinned:
                yield Planned(
                    Change("override", f"{o.site}/{o.model}", "delete"),
                    partial(self.deployments.unpin, o.site, o.model),
                )


class _DeploymentKind:
    def __init__(self, deployments: Deployments, actor: str) -> None:
        self.deployments = deployments
        self.actor = actor

    def upserts(self, doc: FleetDoc) -> Iterator[Planned]:
        for decl in doc.deployments:
            # The file is the whole truth: its strategy and gates are given in full (a
            # request without them would keep the deployment's, see DeployRequest).
            request = DeployRequest(
                ref=decl.model,
                selector=decl.to,
                name=decl.name,
                strategy=parse_strategy(decl.strategy).model_dump(),
                gates=parse_gates(decl.gates).model_dump(),
                params=decl.params,
                follow=decl.follow,
            )
            plan = self.deployments.plan(request)
            old = self.deployments.find(plan.deployment)
            # Which version a following deployment runs is the follow rule's business (the
            # alias moved: it rolls out, waits for the running rollout, or a failed version
            # waits for the next move), not every re-apply of the file's.
            following = old is not None and old.follow and decl.follow
            version = old.target_version if old is not None and following else plan.version
            same = old is not None and _settings(old) == (
                plan.model,
                version,
                plan.selector,
                plan.strategy.model_dump(),
                plan.gates.model_dump(),
                decl.params,
                decl.follow,
            )
            detail = f"{plan.model}:{plan.version} to {plan.selector or '(all sites)'}"
            if decl.follow:
                detail += f", following {parse_ref(decl.model).alias}"
            if same and following:
                continue
            if same and old is not None:
                behind = self._behind(old.name, old.stable_version, plan.version)
                if not behind:
                    continue
                detail += behind
            change = Change(
                "deployment", plan.deployment, "create" if old is None else "update", detail
            )
            refusal = ""
            if not plan.ok:
                refusal = "; ".join(
                    [v.detail for v in plan.violations] + plan.conflicts + plan.errors
                )
            yield Planned(change, partial(self._deploy, change, request), refusal)

    def _behind(self, name: str, running: int | None, declared: int) -> str:
        """Why a deployment the file matches still differs: its sites do not run the
        declared version because its last rollout failed, was aborted or rolled back
        (empty while a rollout is moving to it, or once it runs)."""
        if running == declared:
            return ""
        latest = self.deployments.rollouts(deployment=name)
        if latest and latest[0].state in ACTIVE_STATES:
            return ""
        version = f"version {running}" if running is not None else "no version"
        why = f" after rollout {latest[0].id} {latest[0].state}" if latest else ""
        return f" — sites run {version}{why}; applying starts a new rollout"

    def _deploy(self, change: Change, request: DeployRequest) -> None:
        _, rollout, _ = self.deployments.deploy(request, self.actor)
        change.rollout = rollout.id if rollout else None

    def deletes(self, doc: FleetDoc) -> Iterator[Planned]:
        declared = {d.name or parse_ref(d.model).name for d in doc.deployments}
        for d in self.deployments.list():
            if d.name not in declared:
                yield Planned(
                    Change("deployment", d.name, "delete", f"model {d.model}"),
                    partial(self.deployments.remove, d.name),
                )


def _settings(d: DeploymentRecord) -> tuple[Any, ...]:
    """What a fleet file declares of a deployment, to compare with a declaration."""
    return (d.model, d.target_version, d.selector, d.strategy, d.gates, d.params, d.follow)


def _labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "(no labels)"


class _PipelineKind:
    def __init__(self, pipelines: Pipelines, actor: str) -> None:
        self.pipelines = pipelines
        self.actor = actor

    def upserts(self, doc: FleetDoc) -> Iterator[Planned]:
        current = {p.name: p for p in self.pipelines.repo.list_pipelines()}
        for decl in doc.pipelines or []:
            body = PipelineIn.model_validate(decl.model_dump(exclude={"name"}))
            old = current.get(decl.name)
            if old is not None and old.spec == body.model_dump(mode="json"):
                continue
            detail = f"{body.model}: {body.candidate_alias} -> {body.promote_alias}"
            refusal = ""
            try:
                self.pipelines.check(body)
            except ModelfleetError as exc:
                refusal = exc.message
            yield Planned(
                Change("pipeline", decl.name, "create" if old is None else "update", detail),
                partial(self.pipelines.save, decl.name, body, self.actor),
                refusal,
            )

    def deletes(self, doc: FleetDoc) -> Iterator[Planned]:
        if doc.pipelines is None:
            return
        declared = {p.name for p in doc.pipelines}
        for p in self.pipelines.repo.list_pipelines():
            if p.name not in declared:
                yield Planned(
                    Change("pipeline", p.name, "delete", f"model {p.model}"),
                    partial(self.pipelines.remove, p.name),
                )


class _ScheduleKind:
    def __init__(self, schedules: Schedules, pipelines: Pipelines | None, actor: str) -> None:
        self.schedules = schedules
        self.pipelines = pipelines
        self.actor = actor

    def upserts(self, doc: FleetDoc) -> Iterator[Planned]:
        current = {s.name: s for s in self.schedules.repo.list_schedules()}
        stored = self.pipelines.repo.list_pipelines() if self.pipelines is not None else []
        known = {p.name for p in doc.pipelines or []} | {p.name for p in stored}
        for decl in doc.schedules or []:
            body = ScheduleIn.model_validate(decl.model_dump(exclude={"name"}))
            old = current.get(decl.name)
            action = body.action.model_dump(exclude_none=True)  # a secret only if given
            if (
                old is not None
                and _schedule_fields(old) == _schedule_fields(body)
                and all(old.action.get(k) == v for k, v in action.items())
            ):
                continue
            pipeline = action.get("pipeline")
            refusal = f"unknown pipeline {pipeline!r} in the action" if (
                pipeline is not None and pipeline not in known) else ""  # fmt: skip
            yield Planned(
                Change("schedule", decl.name, "create" if old is None else "update",
                       f"{body.cron!r} {body.timezone} -> {body.action.kind}"),
                partial(self.schedules.save, decl.name, body, self.actor),
                refusal,
            )  # fmt: skip

    def deletes(self, doc: FleetDoc) -> Iterator[Planned]:
        if doc.schedules is None:
            return
        declared = {s.name for s in doc.schedules}
        for s in self.schedules.repo.list_schedules():
            if s.name not in declared:
                yield Planned(
                    Change("schedule", s.name, "delete", f"{s.cron!r} {s.timezone}"),
                    partial(self.schedules.remove, s.name),
                )


def _schedule_fields(s: ScheduleRecord | ScheduleIn) -> tuple[Any, ...]:
    return (check_cron(s.cron), s.timezone, s.enabled, s.misfire_grace_s, s.description)
