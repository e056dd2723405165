"""Rollouts and the controller running them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import JsonValue

from modelfleet.api._base import Free, Record

__all__ = [
    "ControllerStatus",
    "GateCheck",
    "Rollout",
    "RolloutApproval",
    "RolloutSite",
    "RolloutWave",
    "WaveProgress",
]


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


class GateCheck(Record):
    """One gate of the current wave: the figure monitoring sees now next to its limit.

    ``value`` and ``limit`` share ``unit`` (``fraction`` for the error rate and both
    accuracy gates, ``ms`` for both p99 gates, ``statistic`` for drift, ``requests`` for
    ``min_requests``, ``labels`` for ``min_labels``, ``mae`` for ``max_mae``, in the
    model's output unit); ``value`` is None until measured. For ``max_p99_ratio`` the
    ``limit`` is the one the controller applies, ``max(setting x baseline_ms, baseline_ms +
    p99_noise_ms)``, None while the previous version's p99 at these sites (``baseline_ms``)
    is not known yet. ``min_accuracy`` and ``min_accuracy_vs_previous`` are floors (a value
    below ``limit`` breaches); the latter's ``limit`` is ``previous`` (the previous
    version's accuracy at these sites) minus ``setting`` (the drop allowed), None while
    ``previous`` has too few labels. ``state``: ``ok``, ``breached`` (the wave fails on it)
    or ``waiting`` (too few requests or labels to judge).
    """

    gate: Literal[
        "min_requests", "max_error_rate", "max_p99_ms", "max_p99_ratio", "max_drift",
        "max_anomalies", "min_labels", "min_accuracy", "min_accuracy_vs_previous", "max_mae",
    ]  # fmt: skip
    unit: Literal["fraction", "ms", "statistic", "requests", "anomalies", "labels", "mae"]
    value: float | None
    limit: float | None
    setting: float
    baseline_ms: float | None
    state: Literal["ok", "breached", "waiting"]
    previous: float | None = None


class WaveProgress(Record):
    """The current wave of a running or paused rollout, measured when the answer was made:
    requests so far against the ``min_requests`` needed, the bake and deadline clocks, the
    sites not yet running the new version, each gate, and the verdict the controller would
    reach on these figures (``wait`` while too few requests)."""

    wave: int
    requests: int
    errors: int
    min_requests: int
    baseline_requests: int | None
    elapsed_s: float
    bake_s: float
    bake_left_s: float
    deadline_left_s: float
    pending_sites: list[str]
    gates: list[GateCheck]
    verdict: Literal["pass", "fail", "wait"]
    message: str
    measured_at: datetime


class RolloutApproval(Record):
    """The wave a rollout waits for ``rollout approve`` before (from 1), whether it waits
    now, who approved it and when, and the command to type."""

    wave: int
    awaiting: bool
    approved_by: str | None
    approved_at: str | None
    command: str


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
    progress: WaveProgress | None = None  # only while running or paused
    approval: RolloutApproval | None = None  # only when the strategy asks for one
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
