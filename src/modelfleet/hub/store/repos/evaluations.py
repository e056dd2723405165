"""The evaluations repository: evaluations and the sites' aggregate answers.

Every transition is a compare-and-set on the state (``running`` -> ``completed`` or
``failed``), and an answer is stored once per (evaluation, site), so the service can be
advanced from any replica, any number of times, with one outcome.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from modelfleet.hub.store.records.evaluations import AnswerRow, EvaluationRow


class EvaluationRepo(ABC):
    """What the evaluations service persists."""

    @abstractmethod
    def now(self) -> datetime:
        """The store's clock."""

    @abstractmethod
    def create(self, row: EvaluationRow) -> EvaluationRow:
        """Store a new evaluation. ``Conflict`` if the id is taken."""

    @abstractmethod
    def get(self, evaluation_id: str) -> EvaluationRow:
        """The evaluation. ``NotFound`` if it does not exist."""

    @abstractmethod
    def list_evaluations(
        self,
        *,
        model: str | None = None,
        states: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[EvaluationRow]:
        """Evaluations newest first, optionally of one model or in some states."""

    @abstractmethod
    def put_answer(
        self, evaluation_id: str, site: str, kind: str, scores: dict[str, Any], reason: str
    ) -> bool:
        """Store a site's answer; False (nothing written) if it answered before."""

    @abstractmethod
    def answers(self, evaluation_id: str) -> list[AnswerRow]:
        """Every answer of one evaluation, by site."""

    @abstractmethod
    def finish(self, evaluation_id: str, state: str, *, winner: int | None, message: str) -> bool:
        """Move a running evaluation to ``state``; False if it was not running any more."""
