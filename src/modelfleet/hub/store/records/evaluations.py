"""Records of evaluations: the stored request and outcome, and each site's answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class EvaluationRow:
    """One evaluation as stored. ``sites``: every site the selector matched, with its
    status at the start (``selected``, ``refused``, ``offline``, ``excluded``) and why."""

    id: str
    model: str
    versions: list[int]
    refs: list[str]
    selector: str
    metric: str  # accuracy | mae
    min_samples: int
    data: str | None
    rows: str  # holdout | all
    sites: dict[str, dict[str, str]]
    state: str  # running | completed | failed
    winner: int | None
    message: str
    deadline_at: datetime
    created_by: str
    created_at: datetime
    finished_at: datetime | None

    @property
    def selected(self) -> list[str]:
        """The sites asked to evaluate."""
        return sorted(s for s, info in self.sites.items() if info.get("status") == "selected")


@dataclass(frozen=True)
class AnswerRow:
    """A site's answer: ``result`` with ``scores`` (version -> {"count", "total"}: the
    number of rows and the sum of correct predictions or of absolute errors), or
    ``refusal`` with its ``reason``."""

    evaluation_id: str
    site: str
    kind: str  # result | refusal
    scores: dict[str, Any]
    reason: str
    at: datetime
