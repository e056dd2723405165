"""Tables of the events feature, on the shared metadata (see base.py).

* ``events`` — the hub's event log: every state change worth telling someone about
  (a rollout's wave passed, a site went offline, a federated job finished). ``id`` is the
  cursor readers resume from; ``key`` is the natural id of the change (``rollout/r-1/
  started``), unique, so a change observed twice (a controller resumed after SIGKILL) is
  stored once.
* ``webhooks`` — delivery targets: URL, the event types they take, body format, secret
  and ``cursor``: the last event id already queued for them.
* ``webhook_deliveries`` — one row per (target, event) not yet acknowledged: pending with
  its attempt count and next attempt time, or ``dead`` (the dead-letter list). A row is
  deleted only when the target answered 2xx, which is what makes delivery at-least-once.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from modelfleet.hub.store.schema.base import NAME_LEN, UtcDateTime, metadata

events = Table(
    "events",
    metadata,
    Column("id", Integer, nullable=False, autoincrement=True),
    Column("key", String(NAME_LEN), nullable=False),
    Column("type", String(64), nullable=False),
    Column("subject", String(NAME_LEN), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("payload", JSON, nullable=False),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("key"),
    Index(None, "at"),
    Index(None, "subject"),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(32), nullable=False),
    Column("url", Text, nullable=False),
    Column("events", JSON, nullable=False),
    Column("format", String(16), nullable=False),
    Column("secret", String(NAME_LEN), nullable=False),
    Column("description", Text, nullable=False),
    Column("cursor", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("created_by", String(NAME_LEN), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("id"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("target_id", String(32), nullable=False),
    Column("event_id", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_at", UtcDateTime, nullable=False),
    Column("last_error", Text, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("target_id", "event_id"),
    Index(None, "state", "next_at"),
)
