"""Contract of the federation tables on SQLite and PostgreSQL: compare-and-set transitions,
one answer per site, late updates refused, consent upserts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from modelfleet.errors import Conflict, NotFound
from modelfleet.hub.store import FederationRepo, Store
from modelfleet.hub.store.records import NewJob


def _repo(store: Store) -> FederationRepo:
    return store.federation


def _job(repo: FederationRepo, job_id: str = "job-1") -> None:
    repo.create_job(
        NewJob(
            id=job_id, model="m", base_version=1, spec={"family": "softmax"},
            config={"rounds": 2}, weights=b"w0", sites={}, created_by="admin:root",
        )
    )  # fmt: skip


def test_round_lifecycle_is_compare_and_set(store: Store) -> None:
    repo = _repo(store)
    _job(repo)
    with pytest.raises(Conflict):
        _job(repo)
    deadline = repo.now() + timedelta(seconds=30)
    opened = repo.open_round(
        "job-1", 1, selected=["a", "b"], weights=b"w0", deadline_at=deadline, sites={"a": {}}
    )
    assert opened is not None
    assert opened.attempt == 1
    assert opened.state == "open"
    # A second opener (another replica, a retried step) changes nothing.
    assert (
        repo.open_round("job-1", 1, selected=["a"], weights=b"x", deadline_at=deadline, sites={})
        is None
    )
    assert repo.open_rounds()[0].selected == ["a", "b"]

    new, _, _ = repo.put_update("job-1", 1, 1, "a", kind="update", num_examples=5, payload=b"d")
    again, _, answered = repo.put_update(
        "job-1", 1, 1, "a", kind="update", num_examples=9, payload=b"e"
    )
    assert (new, again, answered) == (True, False, {"a"})
    with pytest.raises(Conflict, match="not selected"):
        repo.put_update("job-1", 1, 1, "zed", kind="update", num_examples=1, payload=b"d")
    repo.put_update("job-1", 1, 1, "b", kind="refusal", reason="limit reached")
    assert repo.answered("job-1", 1) == {"a", "b"}
    assert [(r.site, p) for r, p in repo.iter_payloads("job-1", 1)] == [("a", b"d")]

    assert repo.close_round("job-1", 1, 1, state="closed", metrics={"x": 1.0}, outcome={},
                            weights=b"w1", strategy_state=b"s1")  # fmt: skip
    assert not repo.close_round(
        "job-1", 1, 1, state="closed", metrics={}, outcome={}, weights=b"w9"
    )
    assert repo.job_weights("job-1") == (b"w1", b"s1")
    assert repo.get_job("job-1").current_round == 1
    with pytest.raises(Conflict) as late:
        repo.put_update("job-1", 1, 1, "b", kind="update", num_examples=1, payload=b"z")
    assert late.value.code == "round_closed"
    # A's retry of the update the round counted (its reply lost to a hub crash) is
    # acknowledged as already stored, not refused as late.
    retried, closed, _ = repo.put_update(
        "job-1", 1, 1, "a", kind="update", num_examples=5, payload=b"d"
    )
    assert (retried, closed.state) == (False, "closed")
    assert repo.round_weights("job-1", 1) == b"w0"


def test_failed_round_reopens_as_next_attempt_and_forgets_its_updates(store: Store) -> None:
    repo = _repo(store)
    _job(repo)
    deadline = repo.now() + timedelta(seconds=30)
    repo.open_round("job-1", 1, selected=["a"], weights=b"w0", deadline_at=deadline, sites={})
    repo.put_update("job-1", 1, 1, "a", kind="refusal", reason="no")
    assert repo.close_round("job-1", 1, 1, state="failed", metrics={}, outcome={"reason": "few"})
    assert repo.get_job("job-1").current_round == 0
    again = repo.open_round(
        "job-1", 1, selected=["a"], weights=b"w0", deadline_at=deadline, sites={}
    )
    assert again is not None
    assert again.attempt == 2
    assert repo.answered("job-1", 1) == set()
    with pytest.raises(Conflict):  # an answer to attempt 1 arriving late
        repo.put_update("job-1", 1, 1, "a", kind="update", num_examples=1, payload=b"d")


def test_job_transitions_and_consent(store: Store) -> None:
    repo = _repo(store)
    _job(repo)
    assert repo.transition("job-1", ("running",), "aborted", message="stop")
    assert not repo.transition("job-1", ("running",), "completed")
    job = repo.get_job("job-1")
    assert job.state == "aborted"
    assert job.finished_at is not None
    assert job.message == "stop"
    assert (
        repo.open_round("job-1", 1, selected=["a"], weights=b"", deadline_at=repo.now(), sites={})
        is None
    )
    assert [j.id for j in repo.list_jobs(("aborted",))] == ["job-1"]
    with pytest.raises(NotFound):
        repo.get_job("nope")
    repo.set_consent("a", {"participate": False})
    repo.set_consent("a", {"participate": True})
    assert repo.consents() == {"a": {"participate": True}}
