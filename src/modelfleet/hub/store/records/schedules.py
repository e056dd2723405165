"""Records of schedules, triggers and their fires."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: A fire's states: claimed and acting, its outcome, or judged without acting.
FIRE_STATES = ("firing", "fired", "failed", "missed", "interrupted")


@dataclass(frozen=True)
class ScheduleRecord:
    """A cron schedule. ``cursor``: the latest instant already judged (slots at or before
    it fired, were recorded missed, or fell while it was disabled). ``action`` is the
    stored action document, secret included: never shown as is."""

    name: str
    cron: str
    timezone: str
    action: dict[str, Any]
    enabled: bool
    misfire_grace_s: float
    description: str
    cursor: datetime
    created_by: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class TriggerRecord:
    """A condition and its action. ``fires`` counts fires (the compare-and-set column);
    ``state`` is what the condition remembers between passes."""

    name: str
    condition: dict[str, Any]
    action: dict[str, Any]
    cooldown_s: float
    enabled: bool
    description: str
    state: dict[str, Any]
    fires: int
    last_fired_at: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class FireRecord:
    """One schedule slot or trigger fire (``kind``: schedule | trigger). ``slot``: the
    schedule's slot, or when the trigger fired. ``job``: what the action started (a
    federated job id, a hook's HTTP status); ``detail``: the outcome or the error;
    ``reason``: why it was judged so (a trigger's condition, a misfire's lateness)."""

    id: int
    kind: str
    name: str
    slot: datetime
    state: str
    action: str
    job: str | None
    detail: str
    reason: str
    owner: str
    claimed_at: datetime
    finished_at: datetime | None
