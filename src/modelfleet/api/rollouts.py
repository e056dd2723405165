"""Rollouts and the controller running them."""

from __future__ import annotations

from datetime import datetime

from pydantic import JsonValue

from modelfleet.api._base import Free, Record

__all__ = ["ControllerStatus", "Rollout", "RolloutSite", "RolloutWave"]


class RolloutSite(Record):
    """One site of a wave: the version it ran before, and what it reports now (as sent)."""

    site: str
    previous: int | None
    active_version: JsonValue
    state: JsonValue
    error: JsonValue


class RolloutWave(Record):
    index: int
    status: str
    sites: list[RolloutSite]
    decision: Free | None


class Rollout(Record):
    """A rollout with per-wave progress; ``step`` counts from 1."""

    id: str
    deployment: str
    model: str
    from_version: int | None
    to_version: int
    state: str
    step: int
    steps: int
    step_started_at: datetime | None
    strategy: str
    bake_s: float
    progress_deadline_s: float
    gates: Free
    reason: str | None
    waves: list[RolloutWave]
    history: list[Free]
    created_by: str
    created_at: datetime
    updated_at: datetime


class ControllerStatus(Record):
    """Whether this hub process leads (runs the rollout controller), and since when."""

    leader: bool
    leader_since: datetime | None
    election: str
    gate_source: str
