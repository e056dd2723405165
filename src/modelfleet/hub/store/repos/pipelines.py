"""The pipelines repository: pipelines and their runs.

A run is claimed by inserting its row (its id derived from what started it), and every
step moves its ``state`` by compare-and-set: the writer whose update matched acts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from modelfleet.hub.store.records.pipelines import PipelineRecord, RunRecord


class PipelineRepo(ABC):
    """What the pipelines service persists."""

    @abstractmethod
    def save_pipeline(self, record: PipelineRecord) -> PipelineRecord:
        """Create the pipeline, or replace the one of that name."""

    @abstractmethod
    def get_pipeline(self, name: str) -> PipelineRecord:
        """The pipeline. ``NotFound`` if it does not exist."""

    @abstractmethod
    def list_pipelines(self) -> list[PipelineRecord]:
        """Every pipeline, by name."""

    @abstractmethod
    def delete_pipeline(self, name: str) -> None:
        """Remove the pipeline and its runs. ``NotFound`` if it does not exist."""

    @abstractmethod
    def create_run(self, record: RunRecord) -> tuple[RunRecord, bool]:
        """Insert the run unless one of that id exists: the stored run, and whether this
        call inserted it."""

    @abstractmethod
    def get_run(self, run_id: str) -> RunRecord:
        """The run. ``NotFound`` if it does not exist."""

    @abstractmethod
    def list_runs(
        self, pipeline: str | None = None, *, states: tuple[str, ...] = (), limit: int = 100
    ) -> list[RunRecord]:
        """Runs newest first, of one pipeline and in some states when given."""

    @abstractmethod
    def transition(self, run_id: str, expected: str, state: str, **values: Any) -> bool:
        """Move the run from ``expected`` to ``state`` and write ``values`` (columns of
        :class:`RunRecord`); False (nothing written) if its state is no longer
        ``expected`` or the run is gone."""
