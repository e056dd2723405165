"""Records of ground-truth accuracy windows (schema/accuracy.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class AccuracyWindow:
    """The label counts of one site window of one model version (never a row or id)."""

    site: str
    window_id: str
    model: str
    version: int
    start_at: datetime
    end_at: datetime
    kind: str  # "classifier" | "regressor" | "" (only drops)
    labels: int
    correct: int
    abs_error_sum: float
    squared_error_sum: float
    #: ``[[true class, predicted class, count], ...]`` (classifiers)
    confusion: list[list[str | int]] = field(default_factory=list)
    #: dropped labels by reason (``unknown_id``, ``expired``, ``duplicate``, ``bad_label``)
    dropped: dict[str, int] = field(default_factory=dict)
