"""The database deadline watchdog through its interface: a socketpair stands in for a
connection whose answer never comes (what a black-hole partition leaves), so the test needs
no database. The partition itself, with PostgreSQL and two hub replicas, is in
tests/faults/test_postgres_faults.py."""

from __future__ import annotations

import socket
import threading

import pytest
from pydantic import ValidationError

from modelfleet.hub.app import db_deadlines
from modelfleet.hub.store.sql.deadlines import (
    DbDeadlines,
    Watchdog,
    bounded,
    current_limit,
    keepalive_args,
    settings_statement,
)
from modelfleet.settings import HubSettings


def test_an_expired_deadline_wakes_a_blocked_reader_and_says_so() -> None:
    dog = Watchdog()
    a, b = socket.socketpair()
    got: list[bytes] = []
    with a, b:
        token = dog.arm(a.fileno, 0.05)
        reader = threading.Thread(target=lambda: got.append(a.recv(10)))
        reader.start()
        reader.join(30)  # nothing is ever sent: only the cut ends the recv
        assert not reader.is_alive(), "the blocked read was not woken"
        assert got == [b""]  # the socket was shut down, not closed under its owner
        assert a.fileno() >= 0
        assert dog.disarm(token) is True
        assert dog.cuts == 1


def test_a_disarmed_deadline_leaves_the_connection_alone() -> None:
    dog = Watchdog()
    a, b = socket.socketpair()
    with a, b:
        token = dog.arm(a.fileno, 0.05)
        assert dog.disarm(token) is False
        # A later deadline, which fires, proves the watchdog ran past the first one.
        c, d = socket.socketpair()
        with c, d:
            later = dog.arm(c.fileno, 0.1)
            assert c.recv(10) == b""
            assert dog.disarm(later) is True
        b.sendall(b"ping")
        assert a.recv(10) == b"ping"
        assert dog.cuts == 1


def test_bounded_narrows_or_lifts_the_deadline_of_a_block() -> None:
    assert current_limit(30.0) == 30.0
    with bounded(2.0):
        assert current_limit(30.0) == 2.0
        with bounded(None):
            assert current_limit(30.0) is None
        assert current_limit(30.0) == 2.0
    assert current_limit(None) is None


def test_defaults_match_the_settings_and_yield_to_the_url() -> None:
    assert db_deadlines(HubSettings.model_construct()) == DbDeadlines()
    assert DbDeadlines().server_statement_s < DbDeadlines().statement_s
    args = keepalive_args({"keepalives_idle": "3"}, DbDeadlines())
    assert "keepalives_idle" not in args
    assert args["tcp_user_timeout"] == 30_000
    statement = settings_statement({"statement_timeout": "1000", "tcp_keepalives_idle": "10"},
                                   "-c statement_timeout=5s")  # fmt: skip
    assert statement is not None
    assert statement[1] == (["tcp_keepalives_idle"], ["10"])
    assert settings_statement({"statement_timeout": "1"}, "-c statement_timeout=5s") is None


def test_a_lease_shorter_than_a_loop_interval_is_refused() -> None:
    with pytest.raises(ValidationError, match="db_lease_timeout_s"):
        HubSettings(db_lease_timeout_s=10, schedule_interval_s=9, db_lease_ping_deadline_s=1)
