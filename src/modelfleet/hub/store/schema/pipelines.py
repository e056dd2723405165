"""Tables of pipelines and their runs (hub/pipelines.py).

* ``pipelines`` — a named chain: a federated job spec, how to evaluate its result and
  whether to move the alias (``spec``, the validated body as JSON).
* ``pipeline_runs`` — one run each, keyed by an id derived from what started it (a
  schedule's slot, a trigger's fire, or random for ``POST .../runs``): inserting it is the
  claim, so a firing resumed after a restart finds its run instead of starting another.
  ``state`` is moved by compare-and-set only (``UPDATE ... WHERE state = <read>``), so two
  replicas, or a hub killed mid-step and restarted, take each step once.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from modelfleet.hub.store.schema.base import NAME_LEN, UtcDateTime, metadata

pipelines = Table(
    "pipelines",
    metadata,
    Column("name", String(NAME_LEN), nullable=False),
    Column("model", String(NAME_LEN), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("created_by", String(NAME_LEN), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("name"),
)

pipeline_runs = Table(
    "pipeline_runs",
    metadata,
    Column("id", String(NAME_LEN), nullable=False),
    Column("pipeline", String(NAME_LEN), nullable=False),
    Column("model", String(NAME_LEN), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("started_by", String(NAME_LEN), nullable=False),
    Column("job", String(NAME_LEN), nullable=False),
    Column("candidate_version", Integer, nullable=True),
    Column("production_version", Integer, nullable=True),
    Column("evaluation", String(32), nullable=True),
    Column("candidate_score", Float, nullable=True),
    Column("production_score", Float, nullable=True),
    Column("promoted_version", Integer, nullable=True),
    Column("message", Text, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("id"),
    Index(None, "pipeline"),
    Index(None, "state"),
)
