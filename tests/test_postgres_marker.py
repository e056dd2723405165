"""Every test that reaches PostgreSQL carries the ``postgres`` marker, so ``-m postgres``
selects them all (the hook in ``tests/conftest.py`` adds it; this lists what it found)."""

from __future__ import annotations

import pytest

from tests.conftest import POSTGRES_FIXTURES


def test_every_postgres_fixture_user_is_marked(request: pytest.FixtureRequest) -> None:
    users = [
        item
        for item in request.session.items
        if POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ()))
    ]
    unmarked = [i.nodeid for i in users if i.get_closest_marker("postgres") is None]
    print(f"{len(users)} collected tests use a PostgreSQL fixture")
    assert not unmarked, unmarked
