"""Schedules and triggers (``/api/v1/schedules``, ``/api/v1/triggers``): what starts a
federated job or calls a retraining hook, by the clock or when a condition holds.

The inputs are validated here with bounds on every field (the hub adds the checks that
need its state: the cron expression, the time zone, the model); answers are
:class:`~modelfleet.api._base.Record` and never carry a hook's secret, except once in the
answer that made it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelfleet.api._base import Record
from modelfleet.api.pipelines import PipelineActionIn

__all__ = [
    "AccuracyBelowCondition",
    "ActionIn",
    "AnomalyCondition",
    "ConditionIn",
    "DriftCondition",
    "FederatedActionIn",
    "Fire",
    "HookActionIn",
    "NewVersionCondition",
    "Schedule",
    "ScheduleIn",
    "ScheduleSaved",
    "Trigger",
    "TriggerIn",
    "TriggerSaved",
]

#: Longest hook URL the hub accepts (as for webhooks).
MAX_URL_LEN = 2048
#: Longest misfire grace and trigger cooldown: a week and thirty days.
MAX_GRACE_S = 7 * 86_400.0
MAX_COOLDOWN_S = 30 * 86_400.0

ModelName = Annotated[str, Field(min_length=1, max_length=64, description="A model name.")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FederatedActionIn(_In):
    """Start a federated job from a stored job spec (the body of ``fl start`` / ``POST
    /api/v1/federation/jobs``, without ``id``: each fire gets its own, derived from the
    schedule and slot, so a fire resumed after a restart starts no second job)."""

    kind: Literal["federated"]
    job: dict[str, Any] = Field(description="A federated job spec (see docs/federation.md).")


class HookActionIn(_In):
    """POST a signed JSON body to an http(s) URL: a retraining hook for training that runs
    outside the fleet (a CI pipeline, a training service)."""

    kind: Literal["hook"]
    url: str = Field(min_length=1, max_length=MAX_URL_LEN, description="http(s) with a host.")
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=200,
        description="The HMAC key; omitted: kept from the schedule it replaces, else made "
        "by the hub and shown once.",
    )
    payload: dict[str, Any] = Field(
        default_factory=dict, description="Sent as the body's `payload` (at most 4 KiB)."
    )
    timeout_s: float = Field(default=10.0, gt=0, le=60, description="Per request.")


ActionIn = Annotated[
    FederatedActionIn | HookActionIn | PipelineActionIn, Field(discriminator="kind")
]


class ScheduleIn(_In):
    cron: str = Field(
        min_length=1,
        max_length=100,
        description="Five fields: minute hour day-of-month month day-of-week (e.g. '0 3 * * MON').",
    )
    timezone: str = Field(
        min_length=1, max_length=64, description="IANA name, e.g. Europe/Berlin or UTC."
    )
    action: ActionIn
    enabled: bool = True
    misfire_grace_s: float = Field(
        default=600.0,
        ge=1,
        le=MAX_GRACE_S,
        description="A slot judged later than this (the hub was down) is recorded missed.",
    )
    description: str = Field(default="", max_length=500)


class DriftCondition(_In):
    """Drift above the model's thresholds at ``min_sites`` sites or more."""

    kind: Literal["drift"]
    model: ModelName
    min_sites: int = Field(default=1, ge=1, le=100_000)


class AnomalyCondition(_In):
    """An open anomaly of the model (of one metric, at least one severity)."""

    kind: Literal["anomaly"]
    model: ModelName
    metric: str | None = Field(
        default=None,
        max_length=128,
        description="request_rate, error_rate, p99, output_<column>, stuck:<feature> or "
        "missing:<feature>; omitted: any.",
    )
    severity: Literal["warning", "critical"] = Field(
        default="warning", description="The least severity that counts."
    )


class NewVersionCondition(_In):
    """A version of the model registered after the trigger was saved or last fired."""

    kind: Literal["new_version"]
    model: ModelName


class AccuracyBelowCondition(_In):
    """Accuracy below ``floor`` (for regressors, ``metric: mae``: MAE above it) at
    ``min_sites`` sites or more, from the ground truth sites report."""

    kind: Literal["accuracy_below"]
    model: ModelName
    floor: float = Field(ge=0, le=1e12)
    metric: Literal["accuracy", "mae"] = "accuracy"
    min_count: int = Field(
        default=1, ge=1, le=10**12, description="Labelled predictions a figure needs to count."
    )
    min_sites: int = Field(default=1, ge=1, le=100_000)


ConditionIn = Annotated[
    DriftCondition | AnomalyCondition | NewVersionCondition | AccuracyBelowCondition,
    Field(discriminator="kind"),
]


class TriggerIn(_In):
    condition: ConditionIn
    action: ActionIn
    cooldown_s: float = Field(
        default=3600.0,
        ge=1,
        le=MAX_COOLDOWN_S,
        description="After a fire the condition is not looked at for this long.",
    )
    enabled: bool = True
    description: str = Field(default="", max_length=500)


class Fire(Record):
    """One schedule slot or trigger fire and its outcome."""

    id: int
    kind: str = Field(description="schedule or trigger.")
    name: str
    slot: datetime = Field(description="The slot (a trigger: when it fired), UTC.")
    state: str = Field(description="firing, fired, failed, missed or interrupted.")
    action: str
    job: str | None = Field(
        description="What the action started: a federated job id, or a hook's HTTP status."
    )
    detail: str = Field(description="The outcome, or the error.")
    reason: str = Field(description="Why: the condition that held, how late a miss was.")
    claimed_at: datetime
    finished_at: datetime | None


class Schedule(Record):
    name: str
    cron: str
    timezone: str
    action: dict[str, Any] = Field(description="The action, without its secret.")
    enabled: bool
    misfire_grace_s: float
    description: str
    next_slot: datetime | None = Field(description="The next slot, in the schedule's zone.")
    last_fire: Fire | None
    created_by: str
    created_at: datetime
    updated_at: datetime


class ScheduleSaved(Schedule):
    secret: str | None = Field(
        default=None, description="A hook's HMAC key the hub made: shown this once."
    )


class Trigger(Record):
    name: str
    condition: dict[str, Any]
    action: dict[str, Any] = Field(description="The action, without its secret.")
    cooldown_s: float
    enabled: bool
    description: str
    fires: int
    last_fired_at: datetime | None
    cooling_until: datetime | None = Field(description="No fire before this (cooldown).")
    last_fire: Fire | None
    created_by: str
    created_at: datetime
    updated_at: datetime


class TriggerSaved(Trigger):
    secret: str | None = Field(
        default=None, description="A hook's HMAC key the hub made: shown this once."
    )
