"""SiteState: durable, private, thread-safe, and all-or-nothing on every write."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from modelfleet.errors import InvalidInput, StoreError
from modelfleet.site.state import Credentials, SiteState

CREDS = Credentials(
    hub_url="http://127.0.0.1:8700", site="plant-1", token="s3cret-token", public_key="pk"
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "site.db"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_empty_state(db: Path) -> None:
    with SiteState(db) as state:
        assert state.load_credentials() is None
        assert state.load_desired() is None
        assert state.last_good() == {}
        assert state.get("missing") is None


def test_reopen_returns_same_data(db: Path) -> None:
    with SiteState(db) as state:
        state.save_credentials(CREDS)
        state.save_desired('"etag-1"', {"models": [{"name": "m", "version": 3}]})
        state.record_good("m", 3, "sha256:" + "a" * 64, "{manifest}", "c2ln", {"batch": 8})
        state.record_good("n", 1, "sha256:" + "b" * 64, "{n}", "c2lo", {})
        state.set("last_report", "2024-01-01")
    with SiteState(db) as state:
        assert state.load_credentials() == CREDS
        assert state.load_desired() == ('"etag-1"', {"models": [{"name": "m", "version": 3}]})
        good = state.last_good()
        assert sorted(good) == ["m", "n"]
        assert (good["m"].version, good["m"].manifest, good["m"].signature) == (
            3,
            "{manifest}",
            "c2ln",
        )
        assert good["m"].params == {"batch": 8}
        assert good["m"].recorded_at
        assert state.get("last_report") == "2024-01-01"


def test_overwrite_and_forget(db: Path) -> None:
    with SiteState(db) as state:
        state.record_good("m", 1, "sha256:" + "a" * 64, "m1", "s1", {})
        state.record_good("m", 2, "sha256:" + "b" * 64, "m2", "s2", {})
        assert state.last_good()["m"].version == 2
        state.forget("m")
        state.forget("never-there")
        assert state.last_good() == {}
        state.save_desired("e1", {"a": 1})
        state.save_desired("e2", {"a": 2})
        assert state.load_desired() == ("e2", {"a": 2})


def test_file_is_private(db: Path) -> None:
    with SiteState(db) as state:
        state.save_credentials(CREDS)
        assert mode(db) == 0o600
        assert mode(db.parent) == 0o700
        wal = db.with_name(db.name + "-wal")
        assert wal.exists()
        assert mode(wal) == 0o600


def test_token_not_in_repr() -> None:
    assert "s3cret" not in repr(CREDS)


def test_concurrent_writers(db: Path) -> None:
    state = SiteState(db)
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def writer(n: int) -> None:
        try:
            barrier.wait(10)
            for i in range(25):
                state.set(f"k{n}-{i}", str(i))
                state.record_good(f"model-{n}", i + 1, "sha256:" + "c" * 64, "m", "s", {"i": i})
                state.set("shared", str(n))
                state.load_desired()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    good = state.last_good()
    assert {name: g.version for name, g in good.items()} == {f"model-{n}": 25 for n in range(8)}
    assert all(state.get(f"k{n}-24") == "24" for n in range(8))
    assert state.get("shared") in {str(n) for n in range(8)}
    state.close()


def test_interrupted_write_keeps_previous_value(db: Path) -> None:
    with SiteState(db) as state:
        state.set("k", "old")
        state.save_desired("e1", {"v": 1})

        def crash_mid_transaction() -> None:
            with state._transaction() as tx:
                tx.execute("UPDATE kv SET value = 'new' WHERE key = 'k'")
                tx.execute("UPDATE desired SET etag = 'e2'")
                raise RuntimeError("crash mid-transaction")

        with pytest.raises(RuntimeError, match="crash"):
            crash_mid_transaction()
        assert state.get("k") == "old"
        assert state.load_desired() == ("e1", {"v": 1})
    with SiteState(db) as state:
        assert state.get("k") == "old"


def test_unserialisable_params_leave_previous_good(db: Path) -> None:
    with SiteState(db) as state:
        state.record_good("m", 1, "sha256:" + "a" * 64, "m1", "s1", {"ok": True})
        with pytest.raises(InvalidInput, match="params"):
            state.record_good("m", 2, "sha256:" + "b" * 64, "m2", "s2", {"bad": object()})
        with pytest.raises(InvalidInput):
            state.save_desired("e", {"nan": float("nan")})
        assert state.last_good()["m"].version == 1


def test_closed_state_raises_store_error(db: Path) -> None:
    state = SiteState(db)
    state.close()
    with pytest.raises(StoreError):
        state.get("k")
    with pytest.raises(StoreError):
        state.set("k", "v")


def test_newer_schema_is_refused(db: Path) -> None:
    SiteState(db).close()
    import sqlite3

    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(StoreError, match="schema 99"):
        SiteState(db)


def test_unopenable_path_is_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError):
        SiteState(blocker / "site.db")
