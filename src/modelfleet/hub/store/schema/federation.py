"""Tables of the federation feature, on the shared metadata (see base.py).

Kept in their own module so features evolve without editing each other's files; the
matching Alembic revision lives in migrations/versions.

* ``fl_jobs`` — one federated training campaign: its configuration, its state machine
  (``running -> finalizing -> completed``, or ``failed`` / ``aborted``), the current
  global weights and the server optimizer's state, so a restarted hub resumes exactly.
* ``fl_rounds`` — each round's published weights, the selected sites, deadline, outcome.
* ``fl_updates`` — what each selected site answered: an update (binary payload, example
  count, metrics) or a refusal with its reason. One row per (job, round, site) makes a
  re-sent update idempotent.
* ``fl_consent`` — what each site declared about taking part, so a site that refuses is
  never sent a task and operators see why.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from modelfleet.hub.store.schema.base import NAME_LEN, UtcDateTime, metadata

fl_jobs = Table(
    "fl_jobs",
    metadata,
    Column("id", String(64), nullable=False),
    Column("model", String(NAME_LEN), nullable=False),
    Column("base_version", Integer, nullable=False),
    Column("spec", JSON, nullable=False),
    Column("config", JSON, nullable=False),
    Column("state", String(32), nullable=False),
    Column("current_round", Integer, nullable=False),
    Column("weights", LargeBinary, nullable=False),
    Column("strategy_state", LargeBinary, nullable=True),
    Column("sites", JSON, nullable=False),
    Column("message", Text, nullable=False),
    Column("result_version", Integer, nullable=True),
    Column("created_by", String(NAME_LEN), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("id"),
    Index(None, "state"),
)

fl_rounds = Table(
    "fl_rounds",
    metadata,
    Column("job_id", String(64), ForeignKey("fl_jobs.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("state", String(32), nullable=False),
    Column("selected", JSON, nullable=False),
    Column("weights", LargeBinary, nullable=False),
    Column("opened_at", UtcDateTime, nullable=False),
    Column("deadline_at", UtcDateTime, nullable=False),
    Column("closed_at", UtcDateTime, nullable=True),
    Column("metrics", JSON, nullable=False),
    Column("outcome", JSON, nullable=False),
    PrimaryKeyConstraint("job_id", "number"),
    Index(None, "state"),
)

fl_updates = Table(
    "fl_updates",
    metadata,
    Column("job_id", String(64), nullable=False),
    Column("round", Integer, nullable=False),
    Column("site", String(NAME_LEN), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("num_examples", Integer, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("payload", LargeBinary, nullable=True),
    Column("reason", Text, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("job_id", "round", "site"),
)

fl_consent = Table(
    "fl_consent",
    metadata,
    Column("site", String(NAME_LEN), nullable=False),
    Column("declaration", JSON, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("site"),
)

__all__ = ["fl_consent", "fl_jobs", "fl_rounds", "fl_updates", "metadata"]
