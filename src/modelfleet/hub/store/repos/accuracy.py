"""The accuracy repository: label counts per site window, stored once per window id, and
deleted by telemetry retention (``hub/retention.py``) with the telemetry windows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime

from modelfleet.hub.store.records.accuracy import AccuracyWindow


class AccuracyRepo(ABC):
    """What the accuracy service persists."""

    @abstractmethod
    def add(self, windows: Sequence[AccuracyWindow]) -> int:
        """Store the windows not stored yet (by site and window id); how many were new."""

    @abstractmethod
    def models(self) -> list[str]:
        """Names of the models with stored accuracy windows."""

    @abstractmethod
    def windows(
        self,
        *,
        model: str,
        version: int | None = None,
        site: str | None = None,
        since: datetime | None = None,
        limit: int = 100_000,
    ) -> list[AccuracyWindow]:
        """Windows of ``model`` (optionally one version / site) that ended at or after
        ``since``, oldest first, at most ``limit`` (the newest ones when more match)."""

    @abstractmethod
    def prune(self, before: datetime, *, chunk: int = 5000) -> int:
        """Delete the windows that ended before ``before`` (timezone-aware), ``chunk`` rows
        per transaction; how many went. Safe on several replicas at once."""
