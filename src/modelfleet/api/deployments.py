"""Deployments, their plans, per-site overrides, policies and fleet files."""

from __future__ import annotations

from datetime import datetime

from modelfleet.api._base import Free, Record
from modelfleet.api.rollouts import Rollout

__all__ = [
    "ApplyChange",
    "ApplyResult",
    "DeployResult",
    "Deployment",
    "DeploymentFollow",
    "Override",
    "Plan",
    "PlanPolicy",
    "PlanViolation",
    "Policy",
    "PolicyChange",
    "PolicyChanges",
]


class DeploymentFollow(Record):
    """Where a deployment that follows an alias stands: the alias's version now
    (``target_version``), the one it last acted on, what the fleet runs (the last good
    version), and, when the alias's version did not roll out (``state`` ``blocked``: its
    rollout failed, was aborted or rolled back, or its plan was refused), which and why.
    ``state``: ``following``, ``rolling_out``, ``queued`` (waits for the running rollout,
    or for the controller's next tick), ``blocked`` or ``alias_missing``."""

    alias: str
    target_version: int | None
    acted_version: int | None
    fleet_version: int | None
    state: str
    blocked_version: int | None
    reason: str
    message: str


class Deployment(Record):
    name: str
    model: str
    ref: str
    selector: str
    strategy: Free
    gates: Free
    params: Free
    target_version: int | None
    stable_version: int | None
    rollout: str | None
    rollout_state: str | None
    created_at: datetime
    updated_at: datetime
    #: None unless the deployment follows its ref's alias (``deploy --follow``).
    follow: DeploymentFollow | None = None


class PlanViolation(Record):
    """One rule broken at one site (``site`` None for a rule about the whole set)."""

    rule: str
    kind: str
    site: str | None
    detail: str


class PlanPolicy(Record):
    """One policy's verdict on a planned deployment: ``pass``, ``refused`` or
    ``not applicable``, with the reason."""

    rule: str
    kind: str
    verdict: str
    detail: str


class Plan(Record):
    """What a deployment would do: targets, exclusions, violations, waves, each policy's
    verdict and warnings (rules that match no model); ``ok`` when it may proceed."""

    deployment: str | None
    model: str
    ref: str
    version: int | None
    training_regions: list[str]
    selector: str
    strategy: Free
    strategy_text: str
    gates: Free
    from_version: int | None
    rollout: bool
    targets: list[Free]
    excluded: list[Free]
    violations: list[PlanViolation]
    conflicts: list[str]
    waves: list[list[str]]
    errors: list[str]
    #: What a re-deploy kept of the deployment because the request left it out:
    #: ``"strategy"``, ``"gates"``, ``"selector"``, ``"params"`` (a strategy without ``kind``
    #: amends the kept one).
    kept: list[str] = []
    policies: list[PlanPolicy] = []
    warnings: list[str] = []
    ok: bool


class DeployResult(Record):
    """A deployment created or updated, the rollout it started (if any) and its plan."""

    deployment: Deployment
    rollout: Rollout | None
    plan: Plan


class Override(Record):
    """A per-site pin that wins over every deployment selecting the site."""

    site: str
    model: str
    version: int
    reason: str
    created_at: datetime


class Policy(Record):
    """A residency or spread rule; its spec fields (per ``kind``) are extra fields."""

    name: str
    kind: str
    updated_at: datetime


class PolicyChange(Record):
    policy: str
    action: str


class PolicyChanges(Record):
    changed: bool
    changes: list[PolicyChange]


class ApplyChange(Record):
    """One change a fleet file made (or would make); absent fields were empty."""

    kind: str
    name: str
    action: str
    detail: str | None = None
    enrollment_token: str | None = None
    rollout: str | None = None


class ApplyResult(Record):
    dry_run: bool
    changed: bool
    changes: list[ApplyChange]
