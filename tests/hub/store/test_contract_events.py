"""Contract of the event log and webhook delivery on SQLite and PostgreSQL: appends keyed
by natural id, cursors, the per-target queue, dead letters, retention."""

from __future__ import annotations

from datetime import timedelta

import pytest

from modelfleet.errors import Conflict, NotFound
from modelfleet.hub.store import EventRepo, Store
from modelfleet.hub.store.records import WebhookRecord


def _repo(store: Store) -> EventRepo:
    return store.events


def _target(repo: EventRepo, target_id: str, events: list[str], cursor: int = 0) -> None:
    repo.create_target(
        WebhookRecord(
            id=target_id, url="http://127.0.0.1:9/hook", events=events, format="json",
            secret="s3cret", description="", cursor=cursor, max_attempts=3, created_by="admin:root",
            created_at=repo.now(),
        )
    )  # fmt: skip


def test_append_is_idempotent_by_key_and_ids_grow(store: Store) -> None:
    repo = _repo(store)
    first = repo.append("rollout/r1/started", "rollout.started", "r1", {"model": "m"})
    assert first is not None
    assert repo.append("rollout/r1/started", "rollout.started", "r1", {"model": "x"}) is None
    second = repo.append("site/a/offline/1", "site.offline", "a", {})
    assert second is not None
    assert second.id > first.id
    assert repo.last_id() == second.id
    assert [e.key for e in repo.list_events()] == ["rollout/r1/started", "site/a/offline/1"]
    assert [e.id for e in repo.list_events(after=first.id)] == [second.id]
    assert [e.type for e in repo.list_events(types=["rollout.*"])] == ["rollout.started"]
    assert [e.type for e in repo.list_events(types=["site.offline"])] == ["site.offline"]
    assert len(repo.list_events(types=["*"])) == 2
    assert repo.list_events(types=["fl.*"]) == []
    assert repo.list_events(limit=1)[0].id == first.id
    assert repo.list_events()[0].payload == {"model": "m"}
    latest = repo.latest("a", ["site.offline", "site.online"])
    assert latest is not None
    assert latest.id == second.id
    assert repo.latest("b", ["site.offline"]) is None
    assert set(repo.get([first.id, 999999])) == {first.id}


def test_queue_moves_the_cursor_once_and_filters_types(store: Store) -> None:
    repo = _repo(store)
    _target(repo, "w1", ["rollout.*"])
    with pytest.raises(Conflict):
        _target(repo, "w1", ["*"])
    a = repo.append("k1", "rollout.started", "r1", {})
    repo.append("k2", "site.offline", "s", {})
    b = repo.append("k3", "rollout.succeeded", "r1", {})
    assert a is not None
    assert b is not None
    assert repo.enqueue("w1") == 2
    assert repo.enqueue("w1") == 0  # the cursor moved past all three
    assert repo.get_target("w1").cursor == b.id
    now = repo.now()
    due = repo.due("w1", now)
    assert [d.event_id for d in due] == [a.id, b.id]
    assert repo.pending_count("w1") == 2
    repo.acknowledge("w1", a.id)
    repo.retry_later("w1", b.id, attempts=1, next_at=now + timedelta(hours=1), error="500")
    assert repo.due("w1", now) == []
    assert [d.attempts for d in repo.due("w1", now + timedelta(hours=2))] == [1]
    repo.dead_letter("w1", b.id, attempts=5, error="HTTP 500")
    assert repo.pending_count("w1") == 0
    dead = repo.dead_letters("w1")
    assert [(d.event_id, d.state, d.attempts, d.last_error) for d in dead] == [
        (b.id, "dead", 5, "HTTP 500")
    ]
    assert repo.redeliver("w1") == 1
    assert [d.attempts for d in repo.due("w1", repo.now())] == [0]
    assert repo.dead_letters("w1") == []


def test_targets_list_and_delete(store: Store) -> None:
    repo = _repo(store)
    _target(repo, "w1", ["*"])
    _target(repo, "w2", ["site.*"], cursor=7)
    assert [t.id for t in repo.list_targets()] == ["w1", "w2"]
    assert repo.get_target("w2").cursor == 7
    repo.append("k1", "site.online", "s", {})
    repo.enqueue("w1")
    repo.delete_target("w1")
    with pytest.raises(NotFound):
        repo.get_target("w1")
    with pytest.raises(NotFound):
        repo.delete_target("w1")
    assert repo.due("w1", repo.now()) == []


def test_prune_keeps_what_a_delivery_needs(store: Store) -> None:
    repo = _repo(store)
    _target(repo, "w1", ["needed"])
    for i in range(5):
        repo.append(f"k{i}", "needed" if i == 0 else "other", "s", {})
    repo.enqueue("w1")  # event k0 is queued for w1
    assert repo.prune(before=repo.now() - timedelta(days=1), keep=2) == 2
    assert [e.key for e in repo.list_events()] == ["k0", "k3", "k4"]
    assert repo.prune(before=repo.now() + timedelta(seconds=1), keep=100) == 2
    assert [e.key for e in repo.list_events()] == ["k0"]
