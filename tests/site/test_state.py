"""SiteState: durable, private, thread-safe, and all-or-nothing on every write."""

from __future__ import annotations

import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
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


_KILLED_AT_COMMIT = textwrap.dedent(
    """
    import os, signal, sqlite3, sys
    from pathlib import Path

    armed = False

    class KilledAtCommit(sqlite3.Connection):
        # SQLite's own seam, not the state's: the process dies as COMMIT is about to run.
        def execute(self, sql, *args):
            if armed and sql == "COMMIT":
                os.kill(os.getpid(), signal.SIGKILL)
            return super().execute(sql, *args)

    connect = sqlite3.connect
    sqlite3.connect = lambda *a, **k: connect(*a, factory=KilledAtCommit, **k)

    from modelfleet.site.state import SiteState

    state = SiteState(Path(sys.argv[1]))
    state.set("k", "committed")
    armed = True
    state.save_desired("e2", {"v": 2})  # written, never committed: the process dies first
    """
)

_WRITING_UNTIL_KILLED = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from modelfleet.site.state import SiteState
    state = SiteState(Path(sys.argv[1]))
    i = 0
    while True:
        i += 1
        state.set("counter", str(i))
        state.save_desired(f"e{i}", {"i": i, "pad": "x" * 4000})
        if i == 20:
            print("writing", flush=True)
    """
)


def _run_until_killed(script: str, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, str(db)], capture_output=True, text=True, timeout=120
    )


def _integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        (result,) = conn.execute("PRAGMA integrity_check").fetchone()
    finally:
        conn.close()
    return str(result)


def test_interrupted_write_keeps_previous_value(db: Path) -> None:
    """A process SIGKILLed inside a write (its row written, the COMMIT not yet run) leaves
    the old value: what SQLite's journal recovers, not an exception handler's rollback."""
    with SiteState(db) as state:
        state.set("k", "old")
        state.save_desired("e1", {"v": 1})
    killed = _run_until_killed(_KILLED_AT_COMMIT, db)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with SiteState(db) as state:
        assert state.get("k") == "committed"  # the write before it is there...
        assert state.load_desired() == ("e1", {"v": 1})  # ...the interrupted one is not
    assert _integrity(db) == "ok"


def test_sigkill_at_any_moment_leaves_whole_values(db: Path) -> None:
    """A writer killed from outside at an arbitrary moment, through the public interface:
    every value is one that was written whole, and the file is sound."""
    SiteState(db).close()
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITING_UNTIL_KILLED, str(db)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "writing\n"  # 20 writes of each done, more going
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait(30)
    assert writer.returncode == -signal.SIGKILL
    with SiteState(db) as state:
        counter = state.get("counter")
        saved = state.load_desired()
    assert counter is not None
    assert int(counter) >= 20
    assert saved is not None
    etag, doc = saved
    assert etag == f"e{doc['i']}"  # the row is one write's, not a mix of two
    assert doc["pad"] == "x" * 4000
    assert int(counter) - 1 <= doc["i"] <= int(counter)  # written in that order
    assert _integrity(db) == "ok"


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
