"""The schedules repository: schedules, triggers and the fires that claim their slots.

A fire is claimed by inserting its row, unique by ``(kind, name, slot)``, before the
action runs: two replicas (or a restarted hub) judging the same slot insert it once, and
only the one whose insert went in acts. A trigger's fire is claimed by a compare-and-set
on its ``fires`` counter, in the same transaction as the row.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any

from modelfleet.hub.store.records.schedules import FireRecord, ScheduleRecord, TriggerRecord


class ScheduleRepo(ABC):
    """What the schedules and triggers services persist."""

    @abstractmethod
    def save_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        """Create the schedule, or replace the one of that name."""

    @abstractmethod
    def get_schedule(self, name: str) -> ScheduleRecord:
        """The schedule. ``NotFound`` if it does not exist."""

    @abstractmethod
    def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, by name."""

    @abstractmethod
    def delete_schedule(self, name: str) -> None:
        """Remove the schedule and its fires. ``NotFound`` if it does not exist."""

    @abstractmethod
    def advance_cursor(self, name: str, expected: datetime, cursor: datetime) -> bool:
        """Move the schedule's cursor from ``expected`` to ``cursor``; False (nothing
        written) if another writer moved it first or the schedule is gone."""

    @abstractmethod
    def save_trigger(self, record: TriggerRecord) -> TriggerRecord:
        """Create the trigger, or replace the one of that name."""

    @abstractmethod
    def get_trigger(self, name: str) -> TriggerRecord:
        """The trigger. ``NotFound`` if it does not exist."""

    @abstractmethod
    def list_triggers(self) -> list[TriggerRecord]:
        """Every trigger, by name."""

    @abstractmethod
    def delete_trigger(self, name: str) -> None:
        """Remove the trigger and its fires. ``NotFound`` if it does not exist."""

    @abstractmethod
    def set_trigger_state(self, name: str, expected_fires: int, state: dict[str, Any]) -> bool:
        """Replace what the trigger's condition remembers, if it has still fired
        ``expected_fires`` times."""

    @abstractmethod
    def claim_slot(
        self,
        kind: str,
        name: str,
        slot: datetime,
        *,
        state: str,
        action: str,
        owner: str,
        at: datetime,
        reason: str = "",
    ) -> FireRecord | None:
        """Insert the fire of ``(kind, name, slot)``; None (nothing written) if it exists."""

    @abstractmethod
    def claim_trigger_fire(
        self,
        name: str,
        expected_fires: int,
        *,
        at: datetime,
        state: dict[str, Any],
        action: str,
        owner: str,
        reason: str,
    ) -> FireRecord | None:
        """Count a fire of the trigger (``fires`` from ``expected_fires`` to one more,
        ``last_fired_at`` and ``state`` set) and insert its row, in one transaction;
        None (nothing written) if another writer counted one first."""

    @abstractmethod
    def finish_fire(
        self, fire_id: int, *, state: str, job: str | None, detail: str, at: datetime
    ) -> FireRecord:
        """Record a claimed fire's outcome."""

    @abstractmethod
    def list_fires(self, kind: str, name: str, *, limit: int = 100) -> list[FireRecord]:
        """The fires of one schedule or trigger, newest slot first."""

    @abstractmethod
    def latest_fires(self, kind: str) -> dict[str, FireRecord]:
        """The newest fire of each schedule (or trigger), by name."""

    @abstractmethod
    def stale_fires(self, *, claimed_before: datetime, not_owner: str) -> list[FireRecord]:
        """Fires still ``firing`` that another process claimed before ``claimed_before``:
        their process died (or lost the lead) while the action ran."""
