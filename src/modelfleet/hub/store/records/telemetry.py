"""Records of telemetry: windows as sites send them, as stored, and lifetime totals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class NewWindow:
    """One window as a site sent it, validated by the API layer."""

    window_id: str
    model: str
    version: int
    start_at: datetime
    end_at: datetime
    requests: int
    errors: int
    rows: int
    latency_sum: float
    outcomes: dict[str, int]
    latency: dict[str, int]
    batch_sizes: dict[str, int]
    profiles: dict[str, Any]  # {"inputs": {...}, "outputs": {...}}


@dataclass(frozen=True)
class IngestResult:
    """What one delivered batch added: a repeated batch or window adds nothing."""

    duplicate_batch: bool
    accepted: int
    duplicates: int
    #: Seconds the windows were moved to put them on the hub's clock (hub/telemetry.py).
    clock_skew_s: float = 0.0


@dataclass(frozen=True)
class WindowRecord:
    """A stored window; ``profiles`` only when asked for (they are the bulk of a row)."""

    site: str
    model: str
    version: int
    start_at: datetime
    end_at: datetime
    requests: int
    errors: int
    rows: int
    outcomes: dict[str, int]
    latency: dict[str, int]
    profiles: dict[str, Any] | None


@dataclass(frozen=True)
class Totals:
    """Everything a site ever reported for one model version."""

    site: str
    model: str
    version: int
    windows: int
    requests: int
    errors: int
    first_start: datetime
    last_end: datetime
