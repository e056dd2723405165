"""Two hubs on one PostgreSQL database: one delivers webhooks (the ``webhook delivery``
lease), each event reaches the receiver once, and when that hub is SIGKILLed the other
takes delivery over. The events are ``key.rotated``, made by ``hub key rotate`` on the
shared data directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess
from tests.conftest import trust_fleet_ca
from tests.waiting import wait_for
from tests.webhook_receiver import receiver


def _rotate(root: Path, db: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modelfleet", "hub", "key", "rotate", "--data-dir", str(root),
         "--db", db],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_two_hubs_deliver_each_event_once_and_fail_over(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "hub"
    init = init_hub(root, db=postgres_url)
    trust_fleet_ca(monkeypatch, init.ca_file)
    hubs = [
        HubProcess(root, db=postgres_url, log_path=tmp_path / f"hub{i}.log").start()
        for i in range(2)
    ]
    clients = [HubClient(h.url, init.admin_token) for h in hubs]
    try:
        with receiver(200) as rec:
            clients[0].create_webhook(rec.url + "/hook", ["key.*"])
            for _ in range(3):
                _rotate(root, postgres_url)
            ids = [e.id for e in clients[1].list_events(types=["key.rotated"])]
            assert len(ids) == 3
            wait_for(lambda: sorted(rec.ids()) == ids, timeout=30, what="three deliveries")
            hubs[0].kill()  # whichever delivered, the other (or it, restarted) goes on
            _rotate(root, postgres_url)
            wait_for(lambda: len(set(rec.ids())) == 4, timeout=60, what="delivery after kill")
            repeats = len(rec.ids()) - len(set(rec.ids()))
            print(f"two hubs on PostgreSQL: {len(rec.ids())} deliveries, {repeats} repeats")
            assert sorted(set(rec.ids()))[:3] == ids
            assert rec.ids()[:3] == ids  # before the kill: each once, in order
    finally:
        for c in clients:
            c.close()
        for hub in hubs:
            hub.stop()
