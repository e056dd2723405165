"""Backends for the store contract suite.

Every test taking ``open_backend`` or ``store`` runs once per backend. PostgreSQL runs
when ``MODELFLEET_TEST_POSTGRES_URL`` is set; each test gets its own schema (via the
connection's ``search_path``) so parallel runs on one server never see each other.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import make_url

from modelfleet.hub.store import Store, open_store

POSTGRES_ENV = "MODELFLEET_TEST_POSTGRES_URL"

#: Opens (and migrates) another store on the test's database; closed after the test.
OpenBackend = Callable[[], Store]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'hub.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set; PostgreSQL backend not tested")
    import psycopg

    libpq_url = make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(libpq_url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq_url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def open_backend(backend_url: str) -> Iterator[OpenBackend]:
    opened: list[Store] = []

    def _open() -> Store:
        store = open_store(backend_url)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_backend: OpenBackend) -> Store:
    return open_backend()
