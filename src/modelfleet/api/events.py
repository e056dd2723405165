"""Events and webhook targets (``/api/v1/events``, ``/api/v1/webhooks``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from modelfleet.api._base import Record

__all__ = ["DeadLetter", "Event", "Redelivered", "Webhook", "WebhookCreated", "WebhookIn"]

#: Longest webhook URL the hub accepts.
MAX_URL_LEN = 2048


class Event(Record):
    """One state change. ``id`` grows: resume a listing or a stream after the last you saw;
    a webhook receiver de-duplicates by it (delivery is at-least-once)."""

    id: int
    type: str = Field(description="Dotted, e.g. rollout.started, site.offline.")
    subject: str = Field(description="What changed: a rollout id, a site, a federated job.")
    at: datetime
    payload: dict[str, Any]


class WebhookIn(BaseModel):
    url: str = Field(min_length=1, max_length=MAX_URL_LEN, description="http(s) with a host.")
    events: list[str] = Field(
        min_length=1,
        max_length=50,
        description="Event types to deliver: exact (rollout.failed), a family (rollout.*) "
        "or * for every event.",
    )
    format: Literal["json", "slack"] = Field(
        default="json", description='json: the event itself; slack: {"text": a sentence}.'
    )
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=200,
        description="The HMAC key; omitted: the hub makes one and shows it once.",
    )
    description: str = Field(default="", max_length=500)
    max_attempts: int = Field(
        default=8, ge=1, le=20, description="Attempts before an event is dead-lettered."
    )


class Webhook(Record):
    """A target as listed: never its secret."""

    id: str
    url: str
    events: list[str]
    format: str
    description: str
    max_attempts: int
    cursor: int = Field(description="The last event id queued for this target.")
    pending: int = Field(description="Events queued and not yet acknowledged.")
    dead_letters: int = Field(description="Events given up on (see dead-letters).")
    created_by: str
    created_at: datetime


class WebhookCreated(Webhook):
    secret: str = Field(description="The HMAC key. Shown once.")


class DeadLetter(Record):
    """An event the target never acknowledged within its attempts."""

    event_id: int
    type: str | None = Field(description="None if the event itself was pruned since.")
    subject: str | None
    attempts: int
    last_error: str
    updated_at: datetime


class Redelivered(Record):
    requeued: int
