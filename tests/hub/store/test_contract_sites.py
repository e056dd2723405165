"""The store contract for sites, enrollment and assignments: every backend runs it unchanged."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import TypeVar

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import and_, delete, inspect, select

from modelfleet.errors import Conflict, InvalidInput, NotFound
from modelfleet.hub.store import NewVersion, Store
from modelfleet.hub.store.schema import metadata
from modelfleet.hub.store.schema.models import models, versions
from modelfleet.hub.store.sql.store import SqlStore, alembic_config, head_revision
from tests.hub.store.conftest import OpenBackend

T = TypeVar("T")

LATER = datetime(2030, 1, 1, tzinfo=UTC)
NOW = datetime(2029, 6, 1, 12, 0, tzinfo=UTC)


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def push(store: Store, model: str = "pump", *, content: str = "v") -> int:
    new = NewVersion(
        model=model,
        digest=digest_of(content),
        size=len(content),
        io={"inputs": [], "outputs": []},
        opset=17,
        framework=None,
        description="",
        metrics={},
        tags={},
        training_regions=(),
        parent_version=None,
        pushed_by="alice",
    )
    return store.models.create_version(new, lambda n, at: (f'{{"v":{n}}}', "sig")).version


def add_site(store: Store, name: str = "berlin", *, token: str | None = None) -> None:
    store.sites.create(name, {"region": "eu-west"}, token or f"hash-{name}", LATER)


def run_concurrently(threads: int, work: Callable[[int], T]) -> tuple[list[T], list[Exception]]:
    barrier = threading.Barrier(threads)
    results: list[T] = []
    errors: list[Exception] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        barrier.wait()
        try:
            result = work(i)
        except Exception as exc:
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(result)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not any(w.is_alive() for w in workers)
    return results, errors


# --- sites ------------------------------------------------------------------------------


def test_site_create_get_list(store: Store) -> None:
    created = store.sites.create("zurich", {"region": "eu-central", "tier": "edge"}, "h1", LATER)
    add_site(store, "athens")
    assert created == store.sites.get("zurich")
    assert created.labels == {"region": "eu-central", "tier": "edge"}
    assert (created.enrolled_at, created.last_seen, created.report) == (None, None, {})
    assert created.enrollment_expires_at == LATER
    assert created.revision == 1
    assert created.created_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created.created_at) < timedelta(minutes=1)
    assert not hasattr(created, "enrollment_hash")
    assert [s.name for s in store.sites.list()] == ["athens", "zurich"]
    assert store.sites.get("nope") is None


def test_site_create_conflicts_and_bad_input(store: Store) -> None:
    add_site(store, "berlin", token="h")
    with pytest.raises(Conflict, match="berlin"):
        store.sites.create("berlin", {}, "other", LATER)
    with pytest.raises(Conflict):
        store.sites.create("paris", {}, "h", LATER)
    with pytest.raises(InvalidInput):
        store.sites.create("oslo", {}, "h2", datetime(2030, 1, 1))
    assert [s.name for s in store.sites.list()] == ["berlin"]


def test_set_labels(store: Store) -> None:
    add_site(store)
    updated = store.sites.set_labels("berlin", {"region": "eu-central", "provider": "gcp"})
    assert updated.labels == {"region": "eu-central", "provider": "gcp"}
    assert store.sites.get("berlin") == updated
    assert updated.revision == 2  # labels are part of the desired state (and its grants)
    with pytest.raises(NotFound):
        store.sites.set_labels("nope", {})


def test_record_report(store: Store) -> None:
    add_site(store)
    report = {"models": [{"name": "pump", "version": 2, "state": "ready"}], "cpu": 0.25}
    cest = timezone(timedelta(hours=2))
    seen = datetime(2029, 6, 1, 14, 0, 0, 123456, tzinfo=cest)
    store.sites.record_report("berlin", report, seen)
    site = store.sites.get("berlin")
    assert site is not None
    assert site.report == report
    assert site.last_seen == seen
    assert site.last_seen is not None
    assert site.last_seen.utcoffset() == timedelta(0)
    with pytest.raises(NotFound):
        store.sites.record_report("nope", {}, seen)


# --- assignments ------------------------------------------------------------------------


def test_set_assignment_bumps_revision(store: Store) -> None:
    add_site(store)
    push(store, content="a")
    push(store, content="b")
    params = {"batching": {"max_batch": 8, "timeout_ms": 2.5}}
    assert store.assignments.set("berlin", "pump", 1, "pump@production", params) == 2
    [first] = store.assignments.list("berlin")
    assert (first.site, first.model, first.version, first.ref) == (
        "berlin",
        "pump",
        1,
        "pump@production",
    )
    assert first.params == params
    assert first.digest == digest_of("a")
    assert first.assigned_at.utcoffset() == timedelta(0)
    assert store.assignments.set("berlin", "pump", 2, "pump:2", {}) == 3
    [moved] = store.assignments.list("berlin")
    assert (moved.version, moved.ref, moved.params, moved.digest) == (
        2,
        "pump:2",
        {},
        digest_of("b"),
    )
    assert moved.assigned_at >= first.assigned_at
    assert store.assignments.revision("berlin") == 3
    assert store.assignments.all_revisions() == {"berlin": 3}
    site = store.sites.get("berlin")
    assert site is not None
    assert site.revision == 3


def test_set_assignment_not_found_changes_nothing(store: Store) -> None:
    add_site(store)
    push(store)
    with pytest.raises(NotFound):
        store.assignments.set("nope", "pump", 1, "pump:1", {})
    with pytest.raises(NotFound):
        store.assignments.set("berlin", "pump", 2, "pump:2", {})
    with pytest.raises(NotFound):
        store.assignments.set("berlin", "ghost", 1, "ghost:1", {})
    assert store.assignments.revision("berlin") == 1
    assert store.assignments.list("berlin") == []


def test_list_orders_by_model_and_unknown_site_is_empty(store: Store) -> None:
    add_site(store)
    for model in ("zeta", "alpha", "mid"):
        push(store, model, content=model)
        store.assignments.set("berlin", model, 1, f"{model}:1", {})
    assert [a.model for a in store.assignments.list("berlin")] == ["alpha", "mid", "zeta"]
    assert store.assignments.revision("berlin") == 4
    assert store.assignments.list("nope") == []
    with pytest.raises(NotFound):
        store.assignments.revision("nope")


def test_remove_assignment(store: Store) -> None:
    add_site(store)
    push(store, "a", content="a")
    push(store, "b", content="b")
    store.assignments.set("berlin", "a", 1, "a:1", {})
    store.assignments.set("berlin", "b", 1, "b:1", {})
    assert store.assignments.remove("berlin", "a") == 4
    assert [a.model for a in store.assignments.list("berlin")] == ["b"]
    for site, model in (("berlin", "a"), ("berlin", "ghost"), ("nope", "b")):
        with pytest.raises(NotFound):
            store.assignments.remove(site, model)
    assert store.assignments.revision("berlin") == 4


def test_replace_assignments(store: Store) -> None:
    add_site(store)
    for model in ("a", "b", "c"):
        push(store, model, content=model)
    push(store, "b", content="b2")
    store.assignments.set("berlin", "a", 1, "a@production", {"x": 1})
    store.assignments.set("berlin", "b", 1, "b:1", {})
    kept = store.assignments.list("berlin")[0]
    items = [
        ("c", 1, "c:1", {}),
        ("b", 2, "b@canary", {"batch": 4}),
        ("a", 1, "a@production", {"x": 1}),
    ]
    assert store.assignments.replace("berlin", items) == 4
    listed = store.assignments.list("berlin")
    assert [(a.model, a.version, a.ref, a.params) for a in listed] == [
        ("a", 1, "a@production", {"x": 1}),
        ("b", 2, "b@canary", {"batch": 4}),
        ("c", 1, "c:1", {}),
    ]
    assert listed[0].assigned_at == kept.assigned_at
    assert listed[1].digest == digest_of("b2")

    with pytest.raises(InvalidInput, match="a"):
        store.assignments.replace("berlin", [("a", 1, "a:1", {}), ("a", 1, "a:1", {})])
    with pytest.raises(NotFound):
        store.assignments.replace("berlin", [("a", 1, "a:1", {}), ("c", 9, "c:9", {})])
    with pytest.raises(NotFound):
        store.assignments.replace("nope", [])
    assert store.assignments.list("berlin") == listed
    assert store.assignments.revision("berlin") == 4

    assert store.assignments.replace("berlin", []) == 5
    assert store.assignments.list("berlin") == []


def test_a_lower_version_is_marked_a_downgrade_while_the_assignment_lasts(store: Store) -> None:
    add_site(store)
    for content in ("a", "b", "c"):
        push(store, content=content)

    def marked() -> tuple[int, bool]:
        [item] = store.assignments.list("berlin")
        return item.version, item.downgrade

    store.assignments.set("berlin", "pump", 2, "pump:2", {})
    assert marked() == (2, False)
    store.assignments.set("berlin", "pump", 1, "pump:1", {})  # a rollback
    assert marked() == (1, True)
    store.assignments.set("berlin", "pump", 1, "pump:1", {"max_batch_size": 4})
    assert marked() == (1, True)  # still below the version assigned before
    store.assignments.replace("berlin", [("pump", 1, "pump@stable", {})])
    assert marked() == (1, True)  # replace keeps the floor of the row it rewrites
    store.assignments.set("berlin", "pump", 3, "pump:3", {})
    assert marked() == (3, False)
    store.assignments.replace("berlin", [("pump", 2, "pump:2", {})])
    assert marked() == (2, True)
    # Unassigned, then assigned again: a fresh assignment has no floor.
    store.assignments.remove("berlin", "pump")
    store.assignments.set("berlin", "pump", 1, "pump:1", {})
    assert marked() == (1, False)


def test_site_has_digest_and_sites_with_model(store: Store) -> None:
    for name in ("oslo", "berlin", "paris"):
        add_site(store, name)
    push(store, "pump", content="p1")
    push(store, "pump", content="p2")
    push(store, "fan", content="shared")
    push(store, "valve", content="shared")
    store.assignments.set("oslo", "pump", 2, "pump:2", {})
    store.assignments.set("berlin", "pump", 1, "pump:1", {})
    store.assignments.set("berlin", "valve", 1, "valve:1", {})
    assert store.assignments.site_has_digest("berlin", digest_of("p1"))
    assert not store.assignments.site_has_digest("berlin", digest_of("p2"))
    assert store.assignments.site_has_digest("oslo", digest_of("p2"))
    assert store.assignments.site_has_digest("berlin", digest_of("shared"))
    assert not store.assignments.site_has_digest("paris", digest_of("p1"))
    assert not store.assignments.site_has_digest("nope", digest_of("p1"))
    assert store.assignments.sites_with_model("pump") == ["berlin", "oslo"]
    assert store.assignments.sites_with_model("valve") == ["berlin"]
    assert store.assignments.sites_with_model("fan") == []
    assert store.assignments.sites_with_model("ghost") == []


def test_delete_site_cascades_to_assignments(store: Store) -> None:
    add_site(store, "berlin")
    add_site(store, "paris")
    push(store)
    store.assignments.set("berlin", "pump", 1, "pump:1", {})
    store.assignments.set("paris", "pump", 1, "pump:1", {})
    assert store.sites.delete("berlin") is True
    assert store.sites.delete("berlin") is False
    assert store.sites.get("berlin") is None
    assert store.assignments.list("berlin") == []
    assert store.assignments.sites_with_model("pump") == ["paris"]
    assert not store.assignments.site_has_digest("berlin", digest_of("v"))
    add_site(store, "berlin", token="fresh")
    assert store.assignments.revision("berlin") == 1
    assert store.assignments.list("berlin") == []


def test_deleting_a_site_revokes_its_credential_with_it(store: Store) -> None:
    add_site(store, "berlin", token="enroll-berlin")
    add_site(store, "paris", token="enroll-paris")
    store.sites.enroll("enroll-berlin", NOW, "cred-berlin")
    store.sites.enroll("enroll-paris", NOW, "cred-paris")
    before = store.tokens.find_by_hash("cred-berlin")  # a lookup this process remembers
    assert before is not None
    assert before.revoked_at is None
    assert store.sites.delete("berlin") is True
    after = store.tokens.find_by_hash("cred-berlin")
    assert after is not None
    assert after.revoked_at is not None
    revoked = {t.site: t.revoked_at is not None for t in store.tokens.list()}
    assert revoked == {"berlin": True, "paris": False}  # kept, revoked, for the audit trail


def test_a_decommission_removes_every_assignment_until_one_is_made(store: Store) -> None:
    add_site(store, "berlin")
    add_site(store, "paris")
    push(store, "a", content="a")
    push(store, "b", content="b")
    store.assignments.set("berlin", "a", 1, "a:1", {})
    store.assignments.set("berlin", "b", 1, "b:1", {})
    store.assignments.set("paris", "a", 1, "a:1", {})
    assert store.sites.get("berlin").decommissioned_at is None  # type: ignore[union-attr]

    assert store.assignments.decommission("berlin") == 4  # one revision for the lot
    berlin = store.sites.get("berlin")
    assert berlin is not None
    assert berlin.decommissioned_at is not None
    assert berlin.revision == 4
    assert store.assignments.list("berlin") == []
    assert [a.model for a in store.assignments.list("paris")] == ["a"]  # others untouched
    assert store.assignments.decommission("berlin") == 5  # again: still decommissioned
    with pytest.raises(NotFound):
        store.assignments.decommission("nope")

    # Labels are not an assignment: the site stays out of service.
    store.sites.set_labels("berlin", {"region": "eu-central"})
    assert store.sites.get("berlin").decommissioned_at is not None  # type: ignore[union-attr]
    store.assignments.set("berlin", "a", 1, "a:1", {})  # back in service
    assert store.sites.get("berlin").decommissioned_at is None  # type: ignore[union-attr]
    store.assignments.decommission("berlin")
    store.assignments.replace("berlin", [])
    assert store.sites.get("berlin").decommissioned_at is None  # type: ignore[union-attr]


def test_assigned_version_cannot_be_deleted(store: SqlStore) -> None:
    """Whatever deletes versions later, the database refuses to orphan an assignment."""
    add_site(store)
    push(store)
    store.assignments.set("berlin", "pump", 1, "pump:1", {})
    target = and_(
        versions.c.version == 1,
        versions.c.model_id == select(models.c.id).where(models.c.name == "pump").scalar_subquery(),
    )
    with pytest.raises(Conflict), store.write() as conn:
        conn.execute(delete(versions).where(target))
    assert [a.digest for a in store.assignments.list("berlin")] == [digest_of("v")]


def test_concurrent_sets_get_distinct_revisions(open_backend: OpenBackend) -> None:
    stores = [open_backend(), open_backend()]
    add_site(stores[0])
    for model in ("a", "b", "c"):
        push(stores[0], model, content=model)
    start = stores[0].assignments.revision("berlin")
    revisions, errors = run_concurrently(
        10,
        lambda i: stores[i % 2].assignments.set("berlin", "abc"[i % 3], 1, f"#{i}", {"i": i}),
    )
    assert errors == []
    assert sorted(revisions) == list(range(start + 1, start + 11))
    assert stores[1].assignments.revision("berlin") == start + 10
    assert [a.model for a in stores[1].assignments.list("berlin")] == ["a", "b", "c"]


# --- migrations -------------------------------------------------------------------------


def test_migrations_match_schema_module_with_sites(store: SqlStore) -> None:
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    assert store.current_revision() == head_revision()


def test_sites_migration_downgrades_and_upgrades(store: SqlStore) -> None:
    push(store)
    add_site(store)
    with store.write() as conn:
        command.downgrade(alembic_config(conn), "0001")
    assert store.current_revision() == "0001"
    tables = set(inspect(store.engine).get_table_names())
    assert {"models", "versions"} <= tables
    assert not {"sites", "assignments"} & tables
    store.migrate()
    assert store.current_revision() == head_revision()
    assert store.models.get_version("pump", 1) is not None
    assert store.sites.list() == []
    add_site(store)
    assert store.assignments.set("berlin", "pump", 1, "pump:1", {}) == 2
