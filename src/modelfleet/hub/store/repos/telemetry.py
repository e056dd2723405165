"""The telemetry repository: sites' windows, lifetime totals, reference profiles, drift settings.

Sites deliver at least once; the repository gives exactly-once effect by remembering each
batch id and each window id per site, so totals are exact whatever the retries.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from modelfleet.hub.store.records.telemetry import IngestResult, NewWindow, Totals, WindowRecord

#: What one site's requests (or errors) of one model version may ever total: beyond any
#: real traffic, and low enough that no sum the store takes over them (live windows, their
#: roll-ups, both together) overflows a signed 64-bit integer. Each window is bounded too
#: (2^53, in the API schema), but without this, 1025 windows at that bound overflowed
#: SQLite's SUM and the fleet status failed from then on.
MAX_TOTAL = 1 << 62


class TelemetryRepo(ABC):
    """What the telemetry service, the gate source and retention read and write."""

    @abstractmethod
    def ingest(
        self,
        site: str,
        batch_id: str,
        spool_id: str,
        dropped: tuple[int, int],
        windows: Sequence[NewWindow],
    ) -> IngestResult:
        """Store one delivered batch in one transaction: a batch id seen before adds
        nothing, and neither does a window id the site sent before in another batch.
        ``dropped`` is the outbox's cumulative (windows, requests) dropped count.
        ``InvalidInput`` (nothing stored) when a (model, version)'s requests or errors
        would total more than ``MAX_TOTAL`` for the site."""

    @abstractmethod
    def totals(self, site: str | None = None) -> list[Totals]:
        """Per (site, model, version): everything ever reported, exactly (the recent
        windows plus the roll-ups of deleted ones)."""

    @abstractmethod
    def compact(self, before: datetime, *, chunk: int = 5000) -> int:
        """Fold windows that ended before ``before`` into the roll-ups and delete them,
        with batch ids received before it; returns how many windows were folded.

        Each window is counted exactly once even if several replicas compact at the same
        time or a late window arrives meanwhile.
        """

    @abstractmethod
    def windows(
        self,
        *,
        site: str | None = None,
        model: str | None = None,
        version: int | None = None,
        since: datetime | None = None,
        with_profiles: bool = False,
    ) -> list[WindowRecord]:
        """Stored windows ordered by end, filtered; ``since`` keeps those ending after it."""

    @abstractmethod
    def windows_after(
        self,
        after_id: int,
        *,
        site: str | None = None,
        model: str | None = None,
        also: Sequence[int] = (),
        since: datetime | None = None,
        limit: int = 10_000,
    ) -> list[tuple[int, WindowRecord]]:
        """Windows stored with an id above ``after_id`` or in ``also`` (ids grow as windows
        are stored), of ``site`` and ``model`` if given, ending after ``since`` if given,
        with their profiles, ordered by id, at most ``limit``: the anomaly service reads only
        what arrived since its last pass, late windows included, by the primary key
        (``also``: ids it saw missing, which a transaction still open on PostgreSQL may yet
        commit)."""

    @abstractmethod
    def max_window_id(self) -> int:
        """The highest id of a stored window (0 for none): where an id cursor starts."""

    @abstractmethod
    def drops(self) -> dict[str, tuple[int, int]]:
        """Per site: windows and requests its outboxes dropped, summed over outboxes."""

    @abstractmethod
    def set_reference(self, model: str, version: int, profile: dict[str, Any], by: str) -> None:
        """Store (or replace) the version's reference profile. ``NotFound`` if the
        version does not exist."""

    @abstractmethod
    def get_reference(self, model: str, version: int) -> dict[str, Any] | None: ...

    @abstractmethod
    def set_drift_settings(self, model: str, thresholds: dict[str, float]) -> None:
        """Replace the model's drift threshold overrides. ``NotFound`` if no such model."""

    @abstractmethod
    def get_drift_settings(self, model: str) -> dict[str, float]:
        """The model's drift threshold overrides; empty when it has none."""
