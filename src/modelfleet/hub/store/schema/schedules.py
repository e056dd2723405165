"""Tables of schedules and triggers (hub/schedules.py, hub/triggers.py).

* ``schedules`` — a cron expression in an explicit time zone and the action it starts.
  ``cursor`` is the latest instant already judged: every slot at or before it was fired,
  recorded missed, or fell while the schedule was disabled. Moved forward by
  compare-and-set, so two replicas judging at once move it once.
* ``triggers`` — a condition and the action it starts. ``fires`` counts its fires and is
  the compare-and-set column: a fire is claimed by moving it from N to N + 1, so a held
  condition seen by two replicas at once fires once; ``state`` holds what a condition
  remembers between passes (the newest version a ``new_version`` trigger has seen).
* ``automation_fires`` — one row per schedule slot or trigger fire, unique by
  ``(kind, name, slot)``: inserting it *is* the claim, before the action runs, so a slot
  fires once across replicas and restarts. It then carries the outcome (the job id or the
  error).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from modelfleet.hub.store.schema.base import NAME_LEN, UtcDateTime, metadata

schedules = Table(
    "schedules",
    metadata,
    Column("name", String(NAME_LEN), nullable=False),
    Column("cron", String(NAME_LEN), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("action", JSON, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("misfire_grace_s", Float, nullable=False),
    Column("description", Text, nullable=False),
    Column("cursor", UtcDateTime, nullable=False),
    Column("created_by", String(NAME_LEN), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("name"),
)

triggers = Table(
    "triggers",
    metadata,
    Column("name", String(NAME_LEN), nullable=False),
    Column("condition", JSON, nullable=False),
    Column("action", JSON, nullable=False),
    Column("cooldown_s", Float, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("description", Text, nullable=False),
    Column("state", JSON, nullable=False),
    Column("fires", Integer, nullable=False),
    Column("last_fired_at", UtcDateTime, nullable=True),
    Column("created_by", String(NAME_LEN), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("name"),
)

automation_fires = Table(
    "automation_fires",
    metadata,
    Column("id", Integer, nullable=False, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(NAME_LEN), nullable=False),
    Column("slot", UtcDateTime, nullable=False),
    Column("state", String(16), nullable=False),
    Column("action", String(16), nullable=False),
    Column("job", String(NAME_LEN), nullable=True),
    Column("detail", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("owner", String(64), nullable=False),
    Column("claimed_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("kind", "name", "slot"),
    Index(None, "state"),
)
