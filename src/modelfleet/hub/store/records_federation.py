"""What the federation store reads and writes: jobs, rounds and site answers as records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class JobRow:
    id: str
    model: str
    base_version: int
    spec: dict[str, Any]
    config: dict[str, Any]
    state: str
    current_round: int
    sites: dict[str, Any]
    message: str
    result_version: int | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class RoundRow:
    job_id: str
    number: int
    attempt: int
    state: str  # open | closed | failed
    selected: list[str]
    opened_at: datetime
    deadline_at: datetime
    closed_at: datetime | None
    metrics: dict[str, Any]
    outcome: dict[str, Any]


@dataclass(frozen=True)
class UpdateRow:
    job_id: str
    round: int
    site: str
    attempt: int
    kind: str  # update | refusal
    num_examples: int
    metrics: dict[str, Any]
    reason: str
    received_at: datetime


@dataclass(frozen=True)
class NewJob:
    id: str
    model: str
    base_version: int
    spec: dict[str, Any]
    config: dict[str, Any]
    weights: bytes
    sites: dict[str, Any]
    created_by: str
