"""Tables of the telemetry feature, on the shared metadata (see base.py).

Kept in their own module so features evolve without editing each other's files; the
matching Alembic revision lives in migrations/versions.

- ``telemetry_batches``: every batch id a site delivered; a repeat is acknowledged and
  ignored (the exactly-once effect of at-least-once shipping).
- ``telemetry_windows``: one row per window, unique per (site, window id): counts,
  outcomes, latency and batch-size histograms (sparse JSON) and the input/output
  sketches (JSON of base64). Telemetry rows name the site rather than reference it, so
  history outlives a site's removal.
- ``telemetry_rollups``: per (site, model, version), the counts of windows older than
  the retention period, folded in when those windows are deleted: totals stay exact
  while the window table holds only recent history.
- ``telemetry_drops``: cumulative windows and requests a site's outbox dropped, per
  outbox (``spool_id``); the hub keeps the largest figure it was told.
- ``reference_profiles``: the sketches of a version's training data.
- ``drift_settings``: per-model overrides of the drift thresholds.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

from modelfleet.hub.store.schema.base import NAME_LEN, UtcDateTime, metadata

__all__ = [
    "drift_settings",
    "metadata",
    "reference_profiles",
    "telemetry_batches",
    "telemetry_drops",
    "telemetry_rollups",
    "telemetry_windows",
]

telemetry_batches = Table(
    "telemetry_batches",
    metadata,
    Column("site", String(NAME_LEN), nullable=False),
    Column("batch_id", String(64), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("windows", Integer, nullable=False),
    PrimaryKeyConstraint("site", "batch_id"),
    Index(None, "received_at"),
)

telemetry_windows = Table(
    "telemetry_windows",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), autoincrement=True),
    Column("site", String(NAME_LEN), nullable=False),
    Column("window_id", String(64), nullable=False),
    Column("model", String(NAME_LEN), nullable=False),
    Column("version", Integer, nullable=False),
    Column("start_at", UtcDateTime, nullable=False),
    Column("end_at", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("latency_sum", Float, nullable=False),
    Column("outcomes", JSON, nullable=False),
    Column("latency", JSON, nullable=False),
    Column("batch_sizes", JSON, nullable=False),
    Column("profiles", JSON, nullable=False),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("site", "window_id"),
    Index(None, "site", "model", "version", "end_at"),
    Index(None, "model", "version", "end_at"),
    Index(None, "end_at"),
)

telemetry_rollups = Table(
    "telemetry_rollups",
    metadata,
    Column("site", String(NAME_LEN), nullable=False),
    Column("model", String(NAME_LEN), nullable=False),
    Column("version", Integer, nullable=False),
    Column("windows", BigInteger, nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
    Column("first_start", UtcDateTime, nullable=False),
    Column("last_end", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("site", "model", "version"),
)

telemetry_drops = Table(
    "telemetry_drops",
    metadata,
    Column("site", String(NAME_LEN), nullable=False),
    Column("spool_id", String(64), nullable=False),
    Column("windows", BigInteger, nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("site", "spool_id"),
)

reference_profiles = Table(
    "reference_profiles",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("profile", JSON, nullable=False),
    Column("uploaded_by", String(NAME_LEN), nullable=False),
    Column("uploaded_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("model_id", "version"),
    ForeignKeyConstraint(["model_id", "version"], ["versions.model_id", "versions.version"]),
)

drift_settings = Table(
    "drift_settings",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("thresholds", JSON, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("model_id"),
)
