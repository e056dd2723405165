"""The events repository: the hub's event log and the webhook targets' delivery state.

An event is appended under its natural ``key`` with insert-ignore, so whoever observes a
state change (the rollout controller, again after a restart; a replica) may append it as
often as it likes: it is stored, and delivered, once. Ids grow in commit order (the
implementation serialises appends), so a reader that resumes "after id N" never skips an
event that committed late.

Delivery is a queue per target: :meth:`EventRepo.enqueue` moves a target's cursor over
new events of its types and queues one delivery row each; a row is deleted only when the
target acknowledged it, so a hub killed mid-delivery delivers again after the restart
(at-least-once; receivers de-duplicate by event id).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from modelfleet.hub.store.records.events import DeliveryRecord, EventRecord, WebhookRecord


class EventRepo(ABC):
    """What the events service persists."""

    @abstractmethod
    def now(self) -> datetime:
        """The store's clock."""

    # --- the log -------------------------------------------------------------------

    @abstractmethod
    def append(
        self, key: str, type: str, subject: str, payload: dict[str, Any]
    ) -> EventRecord | None:
        """Store a new event; None (and nothing written) if ``key`` is already stored."""

    @abstractmethod
    def list_events(
        self, *, after: int = 0, types: Sequence[str] | None = None, limit: int = 100
    ) -> list[EventRecord]:
        """Events with id > ``after``, oldest first. ``types``: exact types or
        ``prefix.*`` patterns (``*`` alone: every type)."""

    @abstractmethod
    def get(self, event_ids: Sequence[int]) -> dict[int, EventRecord]:
        """The named events that are still stored."""

    @abstractmethod
    def last_id(self) -> int:
        """The highest event id stored (0 if none)."""

    @abstractmethod
    def latest(self, subject: str, types: Sequence[str]) -> EventRecord | None:
        """The newest event about ``subject`` of one of ``types`` (exact), if any."""

    @abstractmethod
    def prune(self, *, before: datetime, keep: int) -> int:
        """Delete events older than ``before`` or beyond the newest ``keep``, except those a
        delivery still needs; how many went."""

    # --- webhook targets -----------------------------------------------------------

    @abstractmethod
    def create_target(self, target: WebhookRecord) -> WebhookRecord:
        """Store a new target. ``Conflict`` if the id is taken."""

    @abstractmethod
    def list_targets(self) -> list[WebhookRecord]:
        """Every target, oldest first."""

    @abstractmethod
    def get_target(self, target_id: str) -> WebhookRecord:
        """The target. ``NotFound`` if it does not exist."""

    @abstractmethod
    def delete_target(self, target_id: str) -> None:
        """Remove the target and its queued deliveries. ``NotFound`` if it does not exist."""

    # --- deliveries ----------------------------------------------------------------

    @abstractmethod
    def enqueue(self, target_id: str, *, limit: int = 500) -> int:
        """Queue the target's next events (of its types, after its cursor) for delivery
        and move its cursor past them; how many were queued. A compare-and-set on the
        cursor: two callers at once queue each event once."""

    @abstractmethod
    def due(self, target_id: str, now: datetime, *, limit: int = 50) -> list[DeliveryRecord]:
        """The target's pending deliveries due by ``now``, oldest event first."""

    @abstractmethod
    def acknowledge(self, target_id: str, event_id: int) -> None:
        """The target took the event: forget the delivery."""

    @abstractmethod
    def retry_later(
        self, target_id: str, event_id: int, *, attempts: int, next_at: datetime, error: str
    ) -> None:
        """An attempt failed: count it and schedule the next."""

    @abstractmethod
    def dead_letter(self, target_id: str, event_id: int, *, attempts: int, error: str) -> None:
        """The last attempt failed: move the delivery to the dead-letter list."""

    @abstractmethod
    def dead_letters(self, target_id: str, *, limit: int = 100) -> list[DeliveryRecord]:
        """The target's dead letters, oldest event first."""

    @abstractmethod
    def pending_count(self, target_id: str) -> int:
        """How many deliveries are still pending (not dead) for the target."""

    @abstractmethod
    def redeliver(self, target_id: str, event_ids: Sequence[int] | None = None) -> int:
        """Put dead letters (all, or the named ones) back in the queue with fresh attempts;
        how many."""


def type_matches(patterns: Sequence[str], type: str) -> bool:
    """Whether an event ``type`` is one a target or a reader asked for: an exact type, a
    ``prefix.*`` pattern (``rollout.*`` takes ``rollout.started``), or ``*``."""
    for pattern in patterns:
        if pattern == "*" or pattern == type:
            return True
        if pattern.endswith(".*") and type.startswith(pattern[:-1]):
            return True
    return False
