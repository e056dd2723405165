"""Records of the event log and of webhook delivery."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class EventRecord:
    """One state change: ``id`` orders them (the readers' cursor), ``key`` names the change
    itself, so it is stored once however often it is observed."""

    id: int
    key: str
    type: str
    subject: str
    at: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class WebhookRecord:
    """A delivery target. ``cursor``: the last event id already queued for it."""

    id: str
    url: str
    events: list[str]
    format: str  # json | slack
    secret: str
    description: str
    cursor: int
    max_attempts: int
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class DeliveryRecord:
    """An event not yet acknowledged by a target: ``pending`` (retried at ``next_at``) or
    ``dead`` (gave up after its attempts: the dead-letter list)."""

    target_id: str
    event_id: int
    state: str
    attempts: int
    next_at: datetime
    last_error: str
    updated_at: datetime
