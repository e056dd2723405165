"""Records of federated learning: jobs, rounds and what each site answered.

Weights, optimizer state and update payloads are bytes read on their own
(``job_weights``, ``round_weights``, ``iter_payloads``), never carried in these records:
listing jobs or showing a round must not load a model's worth of data per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class JobRow:
    """A federated training campaign: its configuration and where its state machine is."""

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
    """One attempt at one round: who was selected, until when, and how it ended."""

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
    """A site's answer to a round: an update (counts and metrics) or a refusal."""

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
    """Everything a job starts with, including the base model's packed weights."""

    id: str
    model: str
    base_version: int
    spec: dict[str, Any]
    config: dict[str, Any]
    weights: bytes
    sites: dict[str, Any]
    created_by: str
