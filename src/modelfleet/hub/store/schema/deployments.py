"""Tables of the deployments feature, on the shared metadata (see base.py).

Kept in their own module so features evolve without editing each other's files; the
matching Alembic revision lives in migrations/versions (0005).

Objects refer to sites and models by name rather than by foreign key: a deployment
describes intent (a selector over labels, a model reference) that may name sites not
registered yet, and the assignments table — the low-level primitive every deployment writes
through — already guards the integrity of what sites are actually told to serve.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    false,
)

from modelfleet.hub.store.schema.base import NAME_LEN, UtcDateTime, metadata

__all__ = ["deployments", "metadata", "overrides", "policies", "rollouts"]

policies = Table(
    "policies",
    metadata,
    Column("name", String(NAME_LEN), nullable=False),
    Column("kind", String(32), nullable=False),  # residency | spread
    Column("spec", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("name"),
)

deployments = Table(
    "deployments",
    metadata,
    Column("name", String(NAME_LEN), nullable=False),
    Column("model", String(NAME_LEN), nullable=False),
    Column("ref", String(2 * NAME_LEN + 1), nullable=False),
    Column("selector", Text, nullable=False),
    Column("strategy", JSON, nullable=False),
    Column("gates", JSON, nullable=False),
    Column("params", JSON, nullable=False),
    # The version the deployment asks for, and the one every selected site runs once no
    # rollout is moving it (None before the first rollout succeeded).
    Column("target_version", Integer, nullable=False),
    Column("stable_version", Integer, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Following the ref's alias (0012): the alias's version last acted on, and why it
    # could not start a rollout (see rollout/follow.py).
    Column("follow", Boolean, nullable=False, server_default=false()),
    Column("follow_version", Integer, nullable=True),
    Column("follow_note", Text, nullable=False, server_default=""),
    PrimaryKeyConstraint("name"),
    Index(None, "model"),
)

overrides = Table(
    "overrides",
    metadata,
    Column("site", String(NAME_LEN), nullable=False),
    Column("model", String(NAME_LEN), nullable=False),
    Column("version", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("site", "model"),
)

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", String(32), nullable=False),
    Column("deployment", String(NAME_LEN), nullable=False),
    Column("model", String(NAME_LEN), nullable=False),
    Column("from_version", Integer, nullable=True),
    Column("to_version", Integer, nullable=False),
    # pending is never stored: a rollout starts running. See rollout/controller.py.
    Column("state", String(16), nullable=False),
    Column("step", Integer, nullable=False),
    Column("step_started_at", UtcDateTime, nullable=False),
    Column("plan", JSON, nullable=False),  # waves, previous versions, gates, timings
    Column("history", JSON, nullable=False),  # one entry per decided step
    Column("reason", Text, nullable=False),
    # Compare-and-set token: every transition requires the seq it read and bumps it.
    Column("seq", Integer, nullable=False),
    Column("created_by", String(NAME_LEN), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("id"),
    Index(None, "deployment"),
    Index(None, "state"),
)
