"""The accuracy repository on both backends (SQLite; PostgreSQL when
``MODELFLEET_TEST_POSTGRES_URL`` is set): once per window id, filters, newest kept."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelfleet.errors import InvalidInput
from modelfleet.hub.store import open_sql_store
from modelfleet.hub.store.records.accuracy import AccuracyWindow
from modelfleet.hub.store.sql.store import SqlStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hub.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = open_sql_store(url)
    yield opened
    opened.close()


def window(
    wid: str, site: str, version: int, minute: int, right: int, wrong: int
) -> AccuracyWindow:
    return AccuracyWindow(
        site=site,
        window_id=wid,
        model="pump",
        version=version,
        start_at=T0 + timedelta(minutes=minute),
        end_at=T0 + timedelta(minutes=minute, seconds=10),
        kind="classifier",
        labels=right + wrong,
        correct=right,
        abs_error_sum=0.0,
        squared_error_sum=0.0,
        confusion=[["1", "1", right], ["1", "0", wrong]],
        dropped={"unknown_id": 1, "expired": 0, "duplicate": 0, "bad_label": 0},
    )


def test_windows_are_stored_once_and_read_back_by_filter(store: SqlStore) -> None:
    repo = store.accuracy
    first = [window("w1", "a", 1, 0, 3, 1), window("w2", "b", 1, 1, 1, 1)]
    assert repo.add(first) == 2
    assert repo.add([first[0], window("w3", "a", 2, 2, 5, 0)]) == 1  # w1 again: ignored
    assert repo.add([window("w1", "b", 2, 3, 1, 0)]) == 1  # same id, another site: new
    assert repo.models() == ["pump"]
    got = repo.windows(model="pump")
    assert [(w.site, w.window_id) for w in got] == [
        ("a", "w1"),
        ("b", "w2"),
        ("a", "w3"),
        ("b", "w1"),
    ]
    assert got[0] == first[0]
    assert [w.window_id for w in repo.windows(model="pump", site="a", version=2)] == ["w3"]
    since = T0 + timedelta(minutes=2)
    assert [w.window_id for w in repo.windows(model="pump", since=since)] == ["w3", "w1"]
    assert [w.window_id for w in repo.windows(model="pump", limit=1)] == ["w1"]  # the newest
    assert repo.windows(model="other") == []


def test_prune_deletes_the_windows_that_ended_before_the_horizon(store: SqlStore) -> None:
    repo = store.accuracy
    repo.add([window(f"w{m}", "a", 1, m, 1, 0) for m in range(7)])
    horizon = T0 + timedelta(minutes=3)  # w0..w2 ended before it; w3 ends 10 s after it
    assert repo.prune(horizon, chunk=2) == 3  # two chunks and a short one
    assert [w.window_id for w in repo.windows(model="pump")] == ["w3", "w4", "w5", "w6"]
    assert repo.prune(horizon) == 0  # idempotent: another replica, the next pass
    with pytest.raises(InvalidInput, match="timezone"):
        repo.prune(datetime(2026, 1, 2))  # naive: refused
