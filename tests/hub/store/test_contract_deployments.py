"""The deployments store on SQLite and PostgreSQL: compare-and-set transitions."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from modelfleet.errors import Conflict, NotFound
from modelfleet.hub.store import DeploymentRepo, Store
from modelfleet.hub.store.records import DeploymentRecord, RolloutChange, RolloutRecord
from tests.hub.store.conftest import OpenBackend


def records(repo: DeploymentRepo, store: Store) -> tuple[DeploymentRecord, RolloutRecord]:
    now = store.now()
    d = DeploymentRecord("pump", "pump", "pump@prod", "", {}, {}, {}, 2, 1, now, now)
    r = RolloutRecord(
        repo.new_rollout_id(), "pump", "pump", 1, 2, "running", 0, now,
        {"waves": [["a"], ["b"]]}, [], "", 1, "admin:t", now, now,
    )  # fmt: skip
    return d, r


def test_transitions_are_compare_and_set(open_backend: OpenBackend) -> None:
    store = open_backend()
    repo = store.deployments
    d, r = records(repo, store)
    repo.save_deployment(d, r, expected_updated_at=None)
    with pytest.raises(Conflict, match="in progress"):
        repo.save_deployment(
            replace(d, updated_at=store.now()), replace(r, id="r-other"),
            expected_updated_at=repo.get_deployment("pump").updated_at,  # type: ignore[union-attr]
        )  # fmt: skip
    # Two controllers decide on the same read: exactly one wins.
    wins: list[RolloutRecord | None] = []

    def decide() -> None:
        wins.append(repo.transition(r, RolloutChange(step=1, history_entry={"step": 0})))

    threads = [threading.Thread(target=decide) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(w is not None for w in wins) == 1
    now_r = repo.get_rollout(r.id)
    assert now_r is not None
    assert (now_r.step, now_r.seq, len(now_r.history)) == (1, 2, 1)
    done = repo.transition(now_r, RolloutChange(state="succeeded", deployment_stable=("pump", 2)))
    assert done is not None
    assert done.moved_sites() == []
    assert repo.get_deployment("pump").stable_version == 2  # type: ignore[union-attr]
    assert [x.id for x in repo.list_rollouts(states=("succeeded",))] == [r.id]


def test_policies_and_overrides_round_trip(open_backend: OpenBackend) -> None:
    store = open_backend()
    repo = store.deployments
    spec = {"label": "provider", "min_distinct": 2, "models": [], "description": ""}
    assert repo.put_policy("spread", "spread", spec)[1] is True
    assert repo.put_policy("spread", "spread", spec)[1] is False
    assert [p.name for p in repo.list_policies()] == ["spread"]
    assert repo.put_override("a", "pump", 3, "local") is True
    assert repo.put_override("a", "pump", 3, "local") is False
    assert [(o.site, o.version) for o in repo.list_overrides("a")] == [("a", 3)]
    repo.delete_override("a", "pump")
    with pytest.raises(NotFound):
        repo.delete_policy("nope")
