"""The store contract: every backend must pass this suite unchanged."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from modelfleet.errors import Conflict, InvalidInput, NotFound, StoreError
from modelfleet.hub.store import (
    AssignmentRepo,
    AuditRepo,
    DeploymentRepo,
    FederationRepo,
    Leadership,
    ModelRepo,
    NewVersion,
    SiteRepo,
    Store,
    TelemetryRepo,
    TokenRepo,
    open_store,
)
from modelfleet.hub.store.schema import metadata
from modelfleet.hub.store.sql.postgres import PostgresStore
from modelfleet.hub.store.sql.sqlite import SqliteStore
from modelfleet.hub.store.sql.store import SqlStore
from tests.hub.store.conftest import OpenBackend


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def new_version(
    model: str = "churn", *, content: str = "v", parent_version: int | None = None
) -> NewVersion:
    return NewVersion(
        model=model,
        digest=digest_of(content),
        size=len(content),
        io={"inputs": [{"name": "x", "shape": [-1, 3], "dtype": "FP32"}], "outputs": []},
        opset=17,
        framework="sklearn",
        description=f"built from {content}",
        metrics={"auc": 0.91, "loss": 0.1 + 0.2},
        tags={"team": "risk"},
        training_regions=("eu-west", "eu-central"),
        parent_version=parent_version,
        pushed_by="alice",
    )


def seal(number: int, created_at: datetime) -> tuple[str, str]:
    return f'{{"version":{number},"at":"{created_at.isoformat()}"}}', f"sig-{number}"


def push(
    store: Store, model: str = "churn", *, content: str = "v", parent_version: int | None = None
) -> int:
    new = new_version(model, content=content, parent_version=parent_version)
    return store.models.create_version(new, seal).version


# --- versions ---------------------------------------------------------------------------


def test_versions_are_numbered_from_one(store: Store) -> None:
    assert [push(store, content=str(i)) for i in range(5)] == [1, 2, 3, 4, 5]
    assert push(store, "other") == 1
    assert [v.version for v in store.models.list_versions("churn")] == [1, 2, 3, 4, 5]


def test_created_record_equals_stored_record(store: Store) -> None:
    seen: list[tuple[int, datetime]] = []

    def recording_seal(number: int, created_at: datetime) -> tuple[str, str]:
        seen.append((number, created_at))
        return seal(number, created_at)

    created = store.models.create_version(new_version(), recording_seal)
    assert seen == [(1, created.created_at)]
    assert created == store.models.get_version("churn", 1)
    assert created.manifest == seal(1, created.created_at)[0]
    assert created.signature == "sig-1"
    assert created.training_regions == ("eu-west", "eu-central")
    assert created.metrics == {"auc": 0.91, "loss": 0.1 + 0.2}
    assert created.io["inputs"][0]["shape"] == [-1, 3]
    assert created.created_at.tzinfo is not None
    assert created.created_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created.created_at) < timedelta(minutes=1)


def test_versions_are_immutable(store: Store) -> None:
    first = store.models.create_version(new_version(content="a"), seal)
    store.models.create_version(new_version(content="a"), seal)
    assert store.models.get_version("churn", 1) == first
    mutators = [n for n in dir(ModelRepo) if n.startswith(("update", "delete_version", "edit"))]
    assert mutators == []


def test_parent_version_must_exist(store: Store) -> None:
    push(store)
    assert push(store, parent_version=1) == 2
    with pytest.raises(NotFound):
        push(store, parent_version=7)
    with pytest.raises(NotFound):
        push(store, "brand-new", parent_version=1)
    assert store.models.get_model("brand-new") is None
    assert push(store) == 3
    second = store.models.get_version("churn", 2)
    assert second is not None
    assert second.parent_version == 1


def test_seal_failure_writes_nothing(store: Store) -> None:
    def broken_seal(number: int, created_at: datetime) -> tuple[str, str]:
        raise RuntimeError("signing key unavailable")

    with pytest.raises(RuntimeError, match="signing key"):
        store.models.create_version(new_version("fresh"), broken_seal)
    assert store.models.get_model("fresh") is None
    assert store.models.list_models() == []

    push(store, "existing")
    with pytest.raises(RuntimeError):
        store.models.create_version(new_version("existing", content="x"), broken_seal)
    assert [v.version for v in store.models.list_versions("existing")] == [1]
    assert not store.models.digest_referenced(digest_of("x"))
    assert push(store, "existing") == 2


def test_unknown_model_reads_are_empty(store: Store) -> None:
    assert store.models.get_model("nope") is None
    assert store.models.get_version("nope", 1) is None
    assert store.models.list_versions("nope") == []
    assert store.models.resolve_alias("nope", "production") is None
    assert store.models.delete_alias("nope", "production") is False
    push(store)
    assert store.models.get_version("churn", 2) is None


# --- aliases ----------------------------------------------------------------------------


def test_alias_set_move_resolve_delete(store: Store) -> None:
    push(store)
    push(store)
    store.models.set_alias("churn", "production", 1)
    assert store.models.resolve_alias("churn", "production") == 1
    store.models.set_alias("churn", "production", 2)
    assert store.models.resolve_alias("churn", "production") == 2
    store.models.set_alias("churn", "canary", 2)
    model = store.models.get_model("churn")
    assert model is not None
    assert model.aliases == {"production": 2, "canary": 2}
    assert store.models.delete_alias("churn", "canary") is True
    assert store.models.delete_alias("churn", "canary") is False
    assert store.models.resolve_alias("churn", "canary") is None
    assert store.models.resolve_alias("churn", "production") == 2


def test_alias_targets_must_exist(store: Store) -> None:
    with pytest.raises(NotFound):
        store.models.set_alias("nope", "production", 1)
    push(store)
    with pytest.raises(NotFound):
        store.models.set_alias("churn", "production", 2)
    assert store.models.resolve_alias("churn", "production") is None


def test_aliases_are_per_model(store: Store) -> None:
    push(store, "a")
    push(store, "b")
    push(store, "b")
    store.models.set_alias("a", "production", 1)
    store.models.set_alias("b", "production", 2)
    assert store.models.resolve_alias("a", "production") == 1
    assert store.models.resolve_alias("b", "production") == 2


# --- models -----------------------------------------------------------------------------


def test_list_models_with_counts_and_aliases(store: Store) -> None:
    assert store.models.list_models() == []
    for _ in range(3):
        push(store, "zeta")
    push(store, "alpha")
    store.models.set_alias("zeta", "production", 2)
    listed = store.models.list_models()
    assert [m.name for m in listed] == ["alpha", "zeta"]
    alpha, zeta = listed
    assert (alpha.latest_version, alpha.version_count, alpha.aliases) == (1, 1, {})
    assert (zeta.latest_version, zeta.version_count, zeta.aliases) == (3, 3, {"production": 2})
    assert store.models.get_model("zeta") == zeta
    assert zeta.created_at.utcoffset() == timedelta(0)
    assert zeta.created_at <= store.models.list_versions("zeta")[0].created_at


def test_digest_referenced(store: Store) -> None:
    assert not store.models.digest_referenced(digest_of("shared"))
    push(store, "a", content="shared")
    push(store, "b", content="shared")
    assert store.models.digest_referenced(digest_of("shared"))
    assert not store.models.digest_referenced(digest_of("other"))


# --- tokens -----------------------------------------------------------------------------


def test_token_create_find_get_list(store: Store) -> None:
    admin = store.tokens.create(name="root", role="admin", token_hash="h1")
    site = store.tokens.create(name="berlin", role="site", token_hash="h2", site="berlin")
    assert store.tokens.find_by_hash("h1") == admin
    assert store.tokens.find_by_hash("h2") == site
    assert store.tokens.find_by_hash("missing") is None
    assert store.tokens.get(site.id) == site
    assert store.tokens.get("missing") is None
    assert site.site == "berlin"
    assert admin.site is None
    assert admin.id != site.id
    assert [t.id for t in store.tokens.list()] == [admin.id, site.id]
    assert not hasattr(admin, "token_hash")


def test_token_revoke(store: Store) -> None:
    token = store.tokens.create(name="ci", role="operator", token_hash="h")
    now = datetime.now(UTC)
    assert token.active(now)
    # Lookups may be remembered briefly, but never past a revocation made here.
    assert store.tokens.find_by_hash("h") == token
    assert store.tokens.find_cached("h") in (token, None)
    assert store.tokens.revoke(token.id) is True
    assert store.tokens.find_cached("h") is None
    assert store.tokens.revoke(token.id) is False
    assert store.tokens.revoke("missing") is False
    revoked = store.tokens.find_by_hash("h")
    assert revoked is not None
    assert revoked.revoked_at is not None
    assert revoked.revoked_at.utcoffset() == timedelta(0)
    assert not revoked.active(now)
    assert [t.id for t in store.tokens.list()] == [token.id]


def test_token_expiry(store: Store) -> None:
    cest = timezone(timedelta(hours=2))
    expires = datetime(2030, 6, 1, 14, 30, 15, 123456, tzinfo=cest)
    token = store.tokens.create(name="temp", role="viewer", token_hash="h", expires_at=expires)
    stored = store.tokens.get(token.id)
    assert stored == token
    assert stored is not None
    assert stored.expires_at is not None
    assert stored.expires_at == expires
    assert stored.expires_at.utcoffset() == timedelta(0)
    assert stored.expires_at.hour == 12
    assert token.active(expires - timedelta(microseconds=1))
    assert not token.active(expires)


def test_token_naive_expiry_rejected(store: Store) -> None:
    with pytest.raises(InvalidInput):
        store.tokens.create(
            name="t", role="viewer", token_hash="h", expires_at=datetime(2030, 1, 1)
        )
    assert store.tokens.list() == []


def test_duplicate_token_hash_conflicts(store: Store) -> None:
    store.tokens.create(name="one", role="admin", token_hash="same")
    with pytest.raises(Conflict):
        store.tokens.create(name="two", role="viewer", token_hash="same")
    assert [t.name for t in store.tokens.list()] == ["one"]


# --- audit ------------------------------------------------------------------------------


def test_audit_newest_first_with_filters(store: Store) -> None:
    assert store.audit.list() == []
    store.audit.record(actor="alice", action="model.push", object="churn:1", outcome="ok")
    store.audit.record(
        actor="bob", action="alias.set", object="churn@prod", outcome="forbidden", detail="viewer"
    )
    store.audit.record(actor="alice", action="alias.set", object="churn@prod", outcome="ok")
    entries = store.audit.list()
    assert [(e.actor, e.action) for e in entries] == [
        ("alice", "alias.set"),
        ("bob", "alias.set"),
        ("alice", "model.push"),
    ]
    assert entries[0].id > entries[1].id > entries[2].id
    assert entries[1].outcome == "forbidden"
    assert entries[1].detail == "viewer"
    assert entries[2].detail == ""
    assert all(e.at.utcoffset() == timedelta(0) for e in entries)
    assert entries[0].at >= entries[2].at
    assert [e.object for e in store.audit.list(actor="alice")] == ["churn@prod", "churn:1"]
    assert [e.actor for e in store.audit.list(action="alias.set")] == ["alice", "bob"]
    assert [e.actor for e in store.audit.list(actor="bob", action="model.push")] == []
    assert len(store.audit.list(limit=2)) == 2
    assert store.audit.list(limit=1)[0].actor == "alice"
    assert store.audit.list(limit=0) == []


# --- the one interface ------------------------------------------------------------------


def test_store_holds_every_repository(store: Store) -> None:
    """One Store builds every repository behind its interface: services only take them."""
    interfaces = {
        "models": ModelRepo,
        "tokens": TokenRepo,
        "audit": AuditRepo,
        "sites": SiteRepo,
        "assignments": AssignmentRepo,
        "deployments": DeploymentRepo,
        "telemetry": TelemetryRepo,
        "federation": FederationRepo,
    }
    for name, interface in interfaces.items():
        assert isinstance(getattr(store, name), interface), name
    leadership = store.leadership("contract test")
    try:
        assert isinstance(leadership, Leadership)
        assert leadership.role == "contract test"
    finally:
        leadership.release()


# --- concurrency and lifecycle ----------------------------------------------------------


def _push_concurrently(stores: list[Store], threads: int) -> list[int]:
    barrier = threading.Barrier(threads)
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        try:
            barrier.wait()
            version = push(stores[i % len(stores)], "hot", content=f"c{i}")
            with lock:
                results.append(version)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert errors == []
    return results


def test_concurrent_pushes_get_consecutive_versions(store: Store) -> None:
    assert sorted(_push_concurrently([store], 20)) == list(range(1, 21))
    model = store.models.get_model("hot")
    assert model is not None
    assert (model.latest_version, model.version_count) == (20, 20)


def test_concurrent_pushes_through_two_stores(open_backend: OpenBackend) -> None:
    """Two store instances on one database stand in for two hub processes."""
    stores = [open_backend(), open_backend()]
    assert sorted(_push_concurrently(stores, 20)) == list(range(1, 21))
    assert [v.version for v in stores[1].models.list_versions("hot")] == list(range(1, 21))


def test_migrations_are_idempotent(open_backend: OpenBackend) -> None:
    first = open_backend()
    push(first)
    second = open_backend()
    assert second.models.get_version("churn", 1) == first.models.get_version("churn", 1)
    assert push(second) == 2


def test_concurrent_open_store(backend_url: str) -> None:
    """Replicas starting together must not race to create the schema."""
    stores: list[Store] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        try:
            barrier.wait()
            stores.append(open_store(backend_url))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=worker) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    try:
        assert errors == []
        assert push(stores[0]) == 1
    finally:
        for s in stores:
            s.close()


def test_migrations_match_schema_module(store: SqlStore) -> None:
    """The schema package and the Alembic revisions must describe the same tables."""
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    from modelfleet.hub.store.sql.store import head_revision

    assert store.current_revision() == head_revision()


# --- opening: URLs and backend specifics -------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root@localhost/hub",
        "postgresql+psycopg2://u@localhost/hub",
        "sqlite://",
        "sqlite:///:memory:",
        "not a url",
        "",
    ],
)
def test_open_store_rejects_unsupported_urls(url: str) -> None:
    with pytest.raises(InvalidInput, match=r"expected|driver"):
        open_store(url)


def test_unreachable_postgres_is_a_store_error() -> None:
    with pytest.raises(StoreError) as info:
        open_store("postgresql://hub:s3cret@127.0.0.1:1/hub?connect_timeout=2")
    assert "s3cret" not in str(info.value)


def test_postgres_url_masks_password_and_uses_psycopg() -> None:
    for url in ("postgresql://hub:s3cret@db:5432/hub", "postgresql+psycopg://hub:s3cret@db/hub"):
        store = PostgresStore(url)
        try:
            assert "s3cret" not in store.url
            assert store.url.startswith("postgresql+psycopg://hub:***@db")
        finally:
            store.close()


def test_sqlite_store_settings(sqlite_url: str, tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    try:
        assert isinstance(store, SqliteStore)
        assert store.url == sqlite_url
        assert (tmp_path / "state" / "hub.db").exists()
        with store.engine.connect() as conn:
            pragmas = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            }
        assert pragmas == {
            "journal_mode": "wal",
            "foreign_keys": 1,
            "busy_timeout": 30000,
            "synchronous": 2,  # FULL: an acknowledged write survives power loss
        }
    finally:
        store.close()
