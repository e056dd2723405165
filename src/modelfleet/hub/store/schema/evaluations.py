"""Tables of the evaluations feature, on the shared metadata (see base.py).

* ``evaluations`` — one comparison of two to eight versions of a model on the labelled
  data held by the sites a selector picks: what was asked (versions, metric, minimum
  sample count, data set, which rows), who was selected and why the others were left out
  (``sites``), the deadline, and the outcome (state, winner, message).
* ``evaluation_answers`` — one row per (evaluation, site): the aggregate counts a site
  returned per version (never rows), or its refusal with the reason. The primary key keeps
  one answer per site, so a site retrying a post (at-least-once) is stored once.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Index, Integer, PrimaryKeyConstraint, String, Table, Text

from modelfleet.hub.store.schema.base import NAME_LEN, UtcDateTime, metadata

evaluations = Table(
    "evaluations",
    metadata,
    Column("id", String(32), nullable=False),
    Column("model", String(NAME_LEN), nullable=False),
    Column("versions", JSON, nullable=False),
    Column("refs", JSON, nullable=False),
    Column("selector", Text, nullable=False),
    Column("metric", String(32), nullable=False),  # balanced_accuracy: 17 (0016)
    Column("min_samples", Integer, nullable=False),
    Column("data", String(NAME_LEN), nullable=True),
    Column("rows", String(16), nullable=False),
    Column("sites", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("winner", Integer, nullable=True),
    Column("message", Text, nullable=False),
    Column("deadline_at", UtcDateTime, nullable=False),
    Column("created_by", String(NAME_LEN), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("id"),
    Index(None, "model"),
    Index(None, "state"),
)

evaluation_answers = Table(
    "evaluation_answers",
    metadata,
    Column("evaluation_id", String(32), nullable=False),
    Column("site", String(NAME_LEN), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("scores", JSON, nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("evaluation_id", "site"),
)
