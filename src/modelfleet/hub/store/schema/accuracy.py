"""Tables of ground-truth accuracy (issue 19): what sites learnt from labels, counts only.

- ``accuracy_windows``: one row per (site, window id) of a telemetry window that carried a
  ``feedback`` block (``modelfleet.site.feedback``): the labels joined, the correct ones
  (classifiers), the error sums (regressors), the confusion counts and the dropped labels
  by reason. Unique per (site, window id), so a window delivered twice counts once. Rows
  name the site rather than reference it, so history outlives a site's removal.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

from modelfleet.hub.store.schema.base import NAME_LEN, UtcDateTime, metadata

__all__ = ["accuracy_windows", "metadata"]

accuracy_windows = Table(
    "accuracy_windows",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), autoincrement=True),
    Column("site", String(NAME_LEN), nullable=False),
    Column("window_id", String(64), nullable=False),
    Column("model", String(NAME_LEN), nullable=False),
    Column("version", Integer, nullable=False),
    Column("start_at", UtcDateTime, nullable=False),
    Column("end_at", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("labels", BigInteger, nullable=False),
    Column("correct", BigInteger, nullable=False),
    Column("abs_error_sum", Float, nullable=False),
    Column("squared_error_sum", Float, nullable=False),
    Column("confusion", JSON, nullable=False),
    Column("dropped", JSON, nullable=False),
    PrimaryKeyConstraint("id", name="pk_accuracy_windows"),
    UniqueConstraint("site", "window_id", name="uq_accuracy_windows_site"),
    Index("ix_accuracy_windows_model_version_end", "model", "version", "end_at"),
)
