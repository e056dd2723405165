"""The pipelines repository on every backend: a run is claimed once by its id, and a step
moves its state only from the state it was read in (two writers: one moves it)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from modelfleet.errors import InvalidInput, NotFound
from modelfleet.hub.store.records.pipelines import PipelineRecord, RunRecord
from tests.hub.store.conftest import OpenBackend


def _pipeline(store, name: str = "weekly") -> PipelineRecord:
    now = store.now()
    return PipelineRecord(name, "iris", {"model": "iris"}, "admin:test", now, now)


def _run(store, run_id: str = "s-weekly-1", pipeline: str = "weekly") -> RunRecord:
    now = store.now()
    return RunRecord(
        id=run_id, pipeline=pipeline, model="iris", spec={"model": "iris"}, state="training",
        started_by="schedule:weekly", job=run_id, candidate_version=None,
        production_version=None, evaluation=None, candidate_score=None,
        production_score=None, promoted_version=None, message="", started_at=now,
        updated_at=now, finished_at=None,
    )  # fmt: skip


def test_pipelines_save_replace_list_and_delete_with_their_runs(store) -> None:
    repo = store.pipelines
    repo.save_pipeline(_pipeline(store))
    repo.save_pipeline(replace(_pipeline(store), spec={"model": "iris", "x": 1}))
    assert [p.spec for p in repo.list_pipelines()] == [{"model": "iris", "x": 1}]
    repo.create_run(_run(store))
    repo.delete_pipeline("weekly")
    with pytest.raises(NotFound, match="pipeline 'weekly' does not exist"):
        repo.get_pipeline("weekly")
    with pytest.raises(NotFound):
        repo.get_run("s-weekly-1")
    with pytest.raises(NotFound):
        repo.delete_pipeline("weekly")


def test_a_run_is_claimed_once_and_steps_are_compare_and_set(open_backend: OpenBackend) -> None:
    one, two = open_backend(), open_backend()  # two replicas on one database
    one.pipelines.save_pipeline(_pipeline(one))
    first, created = one.pipelines.create_run(_run(one))
    again, created_again = two.pipelines.create_run(replace(_run(two), started_by="other"))
    assert (created, created_again) == (True, False)
    assert again.started_by == "schedule:weekly"
    assert one.pipelines.transition(first.id, "training", "evaluating", evaluation="ev-1")
    assert not two.pipelines.transition(first.id, "training", "evaluating", evaluation="ev-2")
    run = two.pipelines.get_run(first.id)
    assert (run.state, run.evaluation) == ("evaluating", "ev-1")
    assert run.updated_at >= first.updated_at
    assert two.pipelines.transition(first.id, "evaluating", "promoted", promoted_version=2)
    assert not one.pipelines.transition(first.id, "evaluating", "kept")
    assert [r.state for r in one.pipelines.list_runs("weekly")] == ["promoted"]
    assert one.pipelines.list_runs(states=("training", "evaluating")) == []
    with pytest.raises(InvalidInput, match="not a run column"):
        one.pipelines.transition(first.id, "promoted", "failed", colour="red")
