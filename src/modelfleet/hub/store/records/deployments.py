"""Records of deployments: policies, deployments, per-site overrides and rollouts.

A rollout record carries its own plan (waves, gates, the versions sites ran before) and
history, so the controller holds nothing in memory between ticks; ``seq`` is what its
compare-and-set transitions check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: Rollout states in which the controller still has work to do (or a human has to act).
ACTIVE_STATES = ("running", "paused")


@dataclass(frozen=True)
class PolicyRecord:
    """A residency or spread rule, as stored; ``spec`` is the rule's own fields."""

    name: str
    kind: str  # residency | spread
    spec: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class DeploymentRecord:
    """Model reference x site selector x strategy: the intent desired state is derived from."""

    name: str
    model: str
    ref: str  # as the operator wrote it, e.g. pump@production
    selector: str
    strategy: dict[str, Any]
    gates: dict[str, Any]
    params: dict[str, Any]
    target_version: int
    stable_version: int | None
    created_at: datetime
    updated_at: datetime
    #: Roll out whenever the ref's alias moves (rollout/follow.py); only for NAME@ALIAS.
    follow: bool = False
    #: The alias's version the deployment last acted on (started a rollout to, or was
    #: refused): the controller acts again only when the alias points elsewhere, so a
    #: version whose rollout failed is not retried in a loop.
    follow_version: int | None = None
    #: Why the alias's version could not even start a rollout (a refused plan); "" if none.
    follow_note: str = ""


@dataclass(frozen=True)
class OverrideRecord:
    """A per-site pin that wins over every deployment selecting the site."""

    site: str
    model: str
    version: int
    reason: str
    created_at: datetime


@dataclass(frozen=True)
class RolloutRecord:
    """The move of a deployment from one version to another, wave by wave."""

    id: str
    deployment: str
    model: str
    from_version: int | None
    to_version: int
    state: str  # running | paused | succeeded | failed | aborted | rolled_back
    step: int
    step_started_at: datetime
    plan: dict[str, Any]
    history: list[dict[str, Any]]
    reason: str
    seq: int
    created_by: str
    created_at: datetime
    updated_at: datetime

    @property
    def waves(self) -> list[list[str]]:
        return [list(w) for w in self.plan.get("waves", [])]

    @property
    def awaiting_approval(self) -> bool:
        """Paused before its current wave until an operator approves: that wave's sites
        have not moved yet (rollout/controller.py, ``approve``)."""
        return self.state == "paused" and bool(self.plan.get("awaiting_approval"))

    def moved_sites(self) -> list[str]:
        """Sites told to run ``to_version`` by this rollout right now."""
        if self.state not in ACTIVE_STATES:
            return []
        reached = self.step if self.awaiting_approval else self.step + 1
        return [s for wave in self.waves[:reached] for s in wave]


@dataclass
class RolloutChange:
    """The fields a transition sets; ``None`` leaves a field as it is."""

    state: str | None = None
    step: int | None = None
    step_started_at: datetime | None = None
    reason: str | None = None
    history_entry: dict[str, Any] | None = None
    deployment_stable: tuple[str, int | None] | None = None  # (deployment, stable_version)
    extra: dict[str, Any] = field(default_factory=dict)
