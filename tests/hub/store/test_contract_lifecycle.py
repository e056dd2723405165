"""Store contract of the token and key lifecycle, on SQLite and PostgreSQL: last use is
written at most once a minute per token (across store instances too), the last active admin
token is never revoked, and re-sealing versions bumps exactly the sites assigned them."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from modelfleet.errors import Conflict
from modelfleet.hub.store import Store
from modelfleet.hub.store.records.models import VersionRecord
from tests.hub.store.conftest import OpenBackend
from tests.hub.store.test_contract_sites import add_site, push


def test_last_use_is_throttled_per_token_and_across_replicas(open_backend: OpenBackend) -> None:
    first = open_backend()
    token = first.tokens.create(name="ci", role="viewer", token_hash="h-ci")
    first.tokens.note_use(token.id)
    first.tokens.note_use(token.id)  # within the minute: nothing more to write
    first.close()  # writes what is pending
    second = open_backend()
    used = second.tokens.get(token.id)
    assert used is not None
    assert used.last_used_at is not None
    # Another replica noting a use within the minute leaves the stored time alone.
    second.tokens.note_use(token.id)
    second.close()
    third = open_backend()
    again = third.tokens.get(token.id)
    assert again is not None
    assert again.last_used_at == used.last_used_at
    third.close()


def test_two_admins_revoking_each_other_at_once_leave_one(open_backend: OpenBackend) -> None:
    setup = open_backend()
    a = setup.tokens.create(name="a", role="admin", token_hash="h-a")
    b = setup.tokens.create(name="b", role="admin", token_hash="h-b")
    setup.close()
    stores = [open_backend(), open_backend()]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def revoke(store: Store, token_id: str) -> None:
        barrier.wait()
        try:
            outcomes.append("revoked" if store.tokens.revoke(token_id) else "no-op")
        except Conflict:
            outcomes.append("conflict")

    threads = [
        threading.Thread(target=revoke, args=(stores[0], a.id)),
        threading.Thread(target=revoke, args=(stores[1], b.id)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["conflict", "revoked"]
    check = stores[0]
    now = datetime.now(UTC)
    active = [t for t in check.tokens.list() if t.role == "admin" and t.active(now)]
    assert len(active) == 1
    for store in stores:
        store.close()


def test_revoke_expired_and_non_admin_tokens(store: Store) -> None:
    admin = store.tokens.create(name="admin", role="admin", token_hash="h-1")
    stale = store.tokens.create(
        name="stale",
        role="admin",
        token_hash="h-2",
        expires_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    viewer = store.tokens.create(name="viewer", role="viewer", token_hash="h-3")
    with pytest.raises(Conflict, match="hub token recover"):
        store.tokens.revoke(admin.id)
    assert store.tokens.revoke(stale.id) is True  # an expired admin may always go
    assert store.tokens.revoke(viewer.id) is True
    assert store.tokens.revoke(viewer.id) is False


def test_reseal_bumps_the_sites_assigned_a_resealed_version(store: Store) -> None:
    for name in ("berlin", "lyon", "oslo"):
        add_site(store, name)
    push(store, content="a")
    push(store, content="b")
    push(store, "fan", content="c")
    store.assignments.set("berlin", "pump", 1, "pump:1", {})
    store.assignments.set("lyon", "pump", 2, "pump:2", {})
    store.assignments.set("oslo", "fan", 1, "fan:1", {})
    before = store.assignments.all_revisions()

    def reseal(version: VersionRecord) -> tuple[str, str] | None:
        if version.model != "pump" or version.version != 1:
            return None
        return '{"v":1,"resealed":true}', "new-sig"

    changed, bumped = store.models.reseal(reseal)
    assert [(v.model, v.version, v.signature) for v in changed] == [("pump", 1, "new-sig")]
    assert bumped == ["berlin"]
    after = store.assignments.all_revisions()
    assert after["berlin"] == before["berlin"] + 1
    assert after["lyon"] == before["lyon"]
    assert after["oslo"] == before["oslo"]
    stored = store.models.get_version("pump", 1)
    assert stored is not None
    assert (stored.manifest, stored.signature) == ('{"v":1,"resealed":true}', "new-sig")
    assert store.models.reseal(lambda _: None) == ([], [])
