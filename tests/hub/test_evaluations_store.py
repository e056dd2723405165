"""The evaluations repository on both backends: one answer per site, one finish."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from modelfleet.errors import Conflict, NotFound
from modelfleet.hub.store import open_sql_store
from modelfleet.hub.store.records import EvaluationRow
from modelfleet.hub.store.sql.store import SqlStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hub.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = open_sql_store(url)
    yield opened
    opened.close()


def row(store: SqlStore, evaluation_id: str, model: str = "clf") -> EvaluationRow:
    now = store.now()
    return EvaluationRow(
        id=evaluation_id,
        model=model,
        versions=[2, 1],
        refs=["candidate", "production"],
        selector="role=holdout",
        metric="accuracy",
        min_samples=20,
        data=None,
        rows="holdout",
        sites={
            "a": {"status": "selected", "reason": ""},
            "b": {"status": "offline", "reason": "x"},
        },
        state="running",
        winner=None,
        message="",
        deadline_at=now + timedelta(minutes=1),
        created_by="admin",
        created_at=now,
        finished_at=None,
    )


def test_answers_are_kept_once_and_an_evaluation_finishes_once(store: SqlStore) -> None:
    repo = store.evaluations
    created = repo.create(row(store, "ev-00000001"))
    assert created.selected == ["a"]
    assert created.sites["b"]["reason"] == "x"
    with pytest.raises(Conflict):
        repo.create(row(store, "ev-00000001"))
    scores = {"2": {"count": 40, "total": 30.0}, "1": {"count": 40, "total": 10.0}}
    assert repo.put_answer("ev-00000001", "a", "result", scores, "") is True
    assert repo.put_answer("ev-00000001", "a", "refusal", {}, "again") is False
    [answer] = repo.answers("ev-00000001")
    assert answer.kind == "result"
    assert answer.scores == scores
    assert repo.finish("ev-00000001", "completed", winner=2, message="1 site") is True
    assert repo.finish("ev-00000001", "failed", winner=None, message="late") is False
    done = repo.get("ev-00000001")
    assert (done.state, done.winner, done.message) == ("completed", 2, "1 site")
    assert done.finished_at is not None
    repo.create(row(store, "ev-00000002", model="reg"))
    assert [r.id for r in repo.list_evaluations(model="clf")] == ["ev-00000001"]
    assert [r.id for r in repo.list_evaluations(states=("running",))] == ["ev-00000002"]
    with pytest.raises(NotFound):
        repo.get("ev-ffffffff")


def test_a_balanced_accuracy_evaluation_and_its_per_class_counts_round_trip(
    store: SqlStore,
) -> None:
    """The metric's name (17 characters: migration 0016 widened the column) and the
    per-class pairs survive the store on every backend."""
    repo = store.evaluations
    asked = replace(row(store, "ev-0000000b"), metric="balanced_accuracy")
    assert repo.create(asked).metric == "balanced_accuracy"
    classes = {"0": [170, 190], "1": [8, 10]}
    scores = {"2": {"count": 200, "total": 178.0, "classes": classes}}
    assert repo.put_answer("ev-0000000b", "a", "result", scores, "") is True
    [answer] = repo.answers("ev-0000000b")
    assert answer.scores == scores
    assert repo.get("ev-0000000b").metric == "balanced_accuracy"
