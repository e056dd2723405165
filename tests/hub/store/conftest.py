"""Backends for the store contract suite: the one conftest of every file beside it.

The suite has one file per domain of the store (``test_contract.py`` for models, tokens,
audit and opening; ``_sites``, ``_deployments``, ``_telemetry``, ``_federation``), and
every test taking ``open_backend`` or ``store`` runs once per backend. PostgreSQL runs
when ``MODELFLEET_TEST_POSTGRES_URL`` is set (``postgres_url`` is in ``tests/conftest.py``);
each test gets its own schema (via the connection's ``search_path``) so parallel runs on
one server never see each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelfleet.hub.store import open_sql_store
from modelfleet.hub.store.sql.store import SqlStore

#: Opens (and migrates) another store on the test's database; closed after the test. The
#: stores are typed as the SQL store they are, so the migration tests reach the engine.
OpenBackend = Callable[[], SqlStore]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'hub.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def open_backend(backend_url: str) -> Iterator[OpenBackend]:
    opened: list[SqlStore] = []

    def _open() -> SqlStore:
        store = open_sql_store(backend_url)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_backend: OpenBackend) -> SqlStore:
    return open_backend()
