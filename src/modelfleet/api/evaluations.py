"""Evaluations of model versions on the sites' labelled data (``/api/v1/evaluations``).

The operator's request and the hub's answer, and the two shapes a site exchanges with
the hub: the task it is sent and the aggregate counts it returns (never rows or labels).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from modelfleet.api._base import Record

__all__ = [
    "CLASSIFICATION",
    "MAX_CLASSES",
    "MAX_CLASS_NAME",
    "MAX_VERSIONS",
    "ClassCounts",
    "Comparison",
    "Evaluation",
    "EvaluationIn",
    "EvaluationResultIn",
    "EvaluationTask",
    "Metric",
    "RefusalIn",
    "SiteScore",
    "TaskVersion",
    "VersionCounts",
    "VersionScore",
]

#: The most versions one evaluation compares (each is downloaded and run at every site).
MAX_VERSIONS = 8
#: The most examples a site's count may claim (a bound, not a quota).
MAX_COUNT = 10**12

#: The most classes a balanced-accuracy answer may carry (one pair of counts each).
MAX_CLASSES = 64
#: The longest class name (the model's vocabulary: label values as text).
MAX_CLASS_NAME = 128

Metric = Literal["accuracy", "balanced_accuracy", "mae"]
#: The metrics that compare a predicted label with the true one (classifiers only).
CLASSIFICATION = frozenset({"accuracy", "balanced_accuracy"})
ClassName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CLASS_NAME)]
Tally = Annotated[int, Field(ge=0, le=MAX_COUNT)]
#: Per true class: ``[right, total]`` -- rows of that class predicted as it, rows of it.
ClassCounts = dict[ClassName, tuple[Tally, Tally]]
Rows = Literal["holdout", "all"]


class EvaluationIn(BaseModel):
    """What an operator (or the pipeline) asks for."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=255, description="The model's name.")
    versions: list[str] = Field(
        min_length=2,
        max_length=MAX_VERSIONS,
        description="Versions to compare: aliases (candidate, production) or numbers. "
        "The first is the challenger that `beats` compares with each of the others.",
    )
    selector: str = Field(
        default="", max_length=2000, description="Label selector of the evaluating sites."
    )
    min_samples: int = Field(
        default=20,
        ge=1,
        le=1_000_000,
        description="A site with fewer labelled rows refuses: a count of a handful of rows "
        "says too much about each row (and too little about the model).",
    )
    metric: Metric | None = Field(
        default=None,
        description="accuracy or balanced_accuracy (classifiers; balanced: the mean of "
        "per-class recall, for imbalanced data) or mae (regressors); default: accuracy when "
        "the model has an integer output (a label), else mae.",
    )
    data: str | None = Field(
        default=None,
        max_length=255,
        description="The data set name in each site's config; default: the site's only "
        "data set open to fleet learning (a site with several refuses).",
    )
    rows: Rows = Field(
        default="holdout",
        description="holdout: the data set's eval_fraction hold-out (the rows federated "
        "training never trains on); all: every row of the file.",
    )
    deadline_s: float = Field(
        default=600.0,
        ge=5,
        le=86400,
        description="Sites that have not answered by then are recorded as missing.",
    )


class VersionScore(Record):
    """One version's metric over every answering site, weighted by their counts."""

    version: int
    metric: str
    value: float | None = Field(
        description="accuracy, balanced accuracy or mae; null without any sample."
    )
    count: int
    sites: int
    classes: ClassCounts | None = Field(
        default=None,
        description="balanced_accuracy only: per true class [right, total] summed over the "
        "sites; null for the other metrics.",
    )


class SiteScore(Record):
    """One site: its status, why (refused, missing) and its metric per version."""

    site: str
    status: str = Field(description="answered | refused | missing | waiting | offline | excluded")
    reason: str = ""
    scores: dict[int, VersionScore] = Field(default_factory=dict)


class Comparison(Record):
    """The challenger (the first version asked for) against one other version."""

    candidate: int
    incumbent: int
    beats: bool
    margin: float | None = Field(
        description="How much better the candidate is (accuracy or balanced accuracy "
        "points, or MAE less); "
        "negative: worse; null: not comparable (no samples, or not completed)."
    )


class Evaluation(Record):
    """An evaluation as the hub shows it."""

    id: str
    model: str
    versions: list[int]
    refs: list[str]
    selector: str
    metric: str
    min_samples: int
    data: str | None
    rows: str
    state: str = Field(description="running | completed | failed")
    winner: int | None
    message: str
    deadline_at: datetime
    created_by: str
    created_at: datetime
    finished_at: datetime | None
    per_version: dict[int, VersionScore]
    sites: dict[str, SiteScore]
    beats: dict[str, Comparison] = Field(
        description='"<first ref>_vs_<other ref>" (e.g. candidate_vs_production) -> the comparison.'
    )


class TaskVersion(BaseModel):
    """One version a site is asked to evaluate, with what it needs to verify it."""

    version: int
    manifest: str = Field(description="The signed manifest's canonical JSON text.")
    signature: str
    digest: str
    size: int


class EvaluationTask(BaseModel):
    """What a site is sent; it checks every part against its own config again."""

    evaluation: str
    model: str
    metric: Metric
    min_samples: int
    data: str | None
    rows: Rows
    deadline_at: datetime
    versions: list[TaskVersion]


class VersionCounts(BaseModel):
    """Aggregates only: rows evaluated and the sum of correct predictions (accuracy,
    balanced_accuracy) or of absolute errors (mae); for balanced_accuracy also, per true
    class, ``[right, total]`` (how the hub checks them against the metric and the totals:
    :meth:`modelfleet.hub.evaluations.Evaluations.answer`)."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, le=MAX_COUNT)
    total: float = Field(ge=0, allow_inf_nan=False)
    classes: ClassCounts | None = Field(default=None, min_length=1, max_length=MAX_CLASSES)

    @model_validator(mode="after")
    def _right_within_total(self) -> VersionCounts:
        for name, (right, total) in (self.classes or {}).items():
            if right > total:
                raise ValueError(f"class {name!r}: {right} right of {total} rows")
        return self


class EvaluationResultIn(BaseModel):
    """A site's answer: counts per version number, nothing else (extra keys refused)."""

    model_config = ConfigDict(extra="forbid")

    scores: dict[int, VersionCounts] = Field(min_length=1, max_length=MAX_VERSIONS)


class RefusalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)
