"""Federated jobs and the sites' consent to take part."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, JsonValue

from modelfleet.api._base import Free, Record

__all__ = ["Consents", "FederatedJob", "FederatedRound"]

#: site -> what it declared (free-form: the consent document evolves with the FL options).
Consents = dict[str, Free]


class FederatedRound(Record):
    round: int
    attempt: int
    state: str
    selected: list[str]
    opened_at: datetime | None
    deadline_at: datetime | None
    closed_at: datetime | None
    clip_norm: float | None = None
    examples_capped: dict[str, int] = Field(default_factory=dict)


class FederatedJob(Record):
    """A job; listed without rounds, shown with ``round_details`` (participants, metrics)."""

    id: str
    model: str
    base_version: int | None
    state: str
    message: str | None
    round: int | None
    rounds: int | None
    strategy: JsonValue
    selector: JsonValue
    data: JsonValue
    min_sites: int | None
    result_version: int | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    sites: JsonValue
    spec: JsonValue
    config: Free
    round_details: list[FederatedRound] | None = None
