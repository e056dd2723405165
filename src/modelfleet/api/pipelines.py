"""Pipelines (``/api/v1/pipelines``): the closed loop in one document — a federated job
whose result becomes ``candidate``, an evaluation of it against ``production`` on held-out
sites, and the alias move when it wins (a deployment following the alias rolls it out).

Bodies are validated here with bounds on every field; the hub adds the checks that need its
state (the model exists, the job spec passes the FL API's validation, the selector parses).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelfleet.api._base import Record
from modelfleet.api.evaluations import Metric

__all__ = [
    "EvaluateIn",
    "Pipeline",
    "PipelineActionIn",
    "PipelineIn",
    "PipelineRun",
    "RunScores",
]

#: The longest an evaluation of a run may wait for its sites (a day).
MAX_DEADLINE_S = 86_400.0

_ALIAS = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvaluateIn(_In):
    """How a run's candidate is compared with the incumbent (see docs/evaluations.md)."""

    selector: str = Field(
        min_length=1,
        max_length=1000,
        description="The held-out sites, e.g. 'role=holdout' (they must consent, see "
        "docs/evaluations.md; keep them out of the job's `sites`).",
    )
    rows: Literal["holdout", "all"] = "holdout"
    min_samples: int = Field(default=20, ge=1, le=1_000_000)
    metric: Metric | None = Field(
        default=None,
        description="accuracy, balanced_accuracy (imbalanced classes) or mae; omitted: "
        "accuracy for a classifier, else mae.",
    )
    data: str | None = Field(default=None, min_length=1, max_length=64)
    margin: float = Field(
        default=0.0,
        ge=0,
        le=1e12,
        description="The candidate must be better by more than this (metric units).",
    )
    deadline_s: float = Field(default=600.0, gt=0, le=MAX_DEADLINE_S)


class PipelineIn(_In):
    """A pipeline: train -> evaluate -> promote, on one model."""

    model: str = Field(min_length=1, max_length=64, description="The model the loop improves.")
    train: dict[str, Any] = Field(
        description="A federated job spec (`fl start -f job.yaml`'s body) on this model, "
        "without `id` (each run gets its own); `alias` is set to `candidate_alias`."
    )
    evaluate: EvaluateIn
    candidate_alias: str = Field(
        default="candidate", min_length=1, max_length=64, pattern=_ALIAS,
        description="The alias the job's result gets.",
    )  # fmt: skip
    promote_alias: str = Field(
        default="production", min_length=1, max_length=64, pattern=_ALIAS,
        description="The incumbent's alias; moved to the candidate when it beats it.",
    )  # fmt: skip
    promote: bool = Field(
        default=True, description="Move promote_alias to the candidate when it beats it."
    )
    description: str = Field(default="", max_length=500)


class PipelineActionIn(_In):
    """A schedule's or trigger's action that starts a run of a pipeline (one run per
    fire: its id is derived from the fire)."""

    kind: Literal["pipeline"]
    pipeline: str = Field(min_length=1, max_length=64)


class Pipeline(Record):
    name: str
    model: str
    train: dict[str, Any]
    evaluate: dict[str, Any]
    candidate_alias: str
    promote_alias: str
    promote: bool
    description: str
    last_run: PipelineRun | None
    created_by: str
    created_at: datetime
    updated_at: datetime


class RunScores(Record):
    """The evaluation's metric for each side (None until scored)."""

    metric: str | None
    candidate: float | None
    production: float | None


class PipelineRun(Record):
    id: str
    pipeline: str
    model: str
    state: str = Field(description="training, evaluating, promoted, kept or failed.")
    started_by: str
    job: str = Field(description="The federated job's id (derived from the run's).")
    candidate_version: int | None
    production_version: int | None = Field(description="The incumbent it was compared with.")
    evaluation: str | None
    scores: RunScores
    promoted_version: int | None
    message: str
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None


Pipeline.model_rebuild()
