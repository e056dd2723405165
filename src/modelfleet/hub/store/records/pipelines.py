"""Records of pipelines (train -> evaluate -> promote) and their runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: A run's states: the two it passes through and the three it ends in.
ACTIVE_RUN_STATES = ("training", "evaluating")
FINISHED_RUN_STATES = ("promoted", "kept", "failed")


@dataclass(frozen=True)
class PipelineRecord:
    """A pipeline as saved: ``spec`` is the validated body (``PipelineIn``) as JSON."""

    name: str
    model: str
    spec: dict[str, Any]
    created_by: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RunRecord:
    """One run of a pipeline. ``spec`` is the pipeline's spec when the run started, so
    editing the pipeline never changes a run in flight; ``state`` is the compare-and-set
    column every step moves."""

    id: str
    pipeline: str
    model: str
    spec: dict[str, Any]
    state: str
    started_by: str
    job: str
    candidate_version: int | None
    production_version: int | None
    evaluation: str | None
    candidate_score: float | None
    production_score: float | None
    promoted_version: int | None
    message: str
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
