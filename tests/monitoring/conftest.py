"""Fixtures of the monitoring tests: a real hub, sites on loopback, a recording proxy."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess
from tests.conftest import trust_fleet_ca
from tests.recording_proxy import RecordingProxy

FAST_TELEMETRY = {
    "MODELFLEET_SITE_TELEMETRY_WINDOW_S": "0.2",
    "MODELFLEET_SITE_TELEMETRY_SHIP_INTERVAL_S": "0.2",
    "MODELFLEET_SITE_RETRY_MAX_S": "1",
}


@dataclass
class Fleet:
    root: Path
    hub: HubProcess
    admin: HubClient
    #: An infer token: the sites' /v2 require one.
    infer: str = ""
    sites: list[SiteProcess] = field(default_factory=list)
    proxies: list[RecordingProxy] = field(default_factory=list)

    def add_site(self, name: str, *, via: RecordingProxy | None = None, **env: str) -> SiteProcess:
        created = self.admin.add_site(name, {"region": "eu-west"})
        site = SiteProcess(
            self.root / f"site-{name}",
            via.url if via else self.hub.url,
            created["enrollment_token"],
            extra_env={**FAST_TELEMETRY, **env},
        ).start()
        self.sites.append(site)
        return site

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin.token}"}

    def proxy(self) -> RecordingProxy:
        made = RecordingProxy(self.hub.port, tls=self.hub.tls)
        self.proxies.append(made)
        return made

    def site_total(self, site: str) -> int:
        for row in self.admin.get_telemetry_status()["sites"]:
            if row["site"] == site:
                return int(row["requests_total"])
        return 0


@pytest.fixture
def fleet(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Fleet]:
    init = init_hub(tmp_path / "hub")
    plain = request.node.get_closest_marker("plain_http") is not None
    hub = HubProcess(tmp_path / "hub", tls=not plain).start()
    if not plain:
        trust_fleet_ca(monkeypatch, hub.ca_file)
    admin = HubClient(hub.url, init.admin_token)
    made = Fleet(tmp_path, hub, admin, admin.create_token("monitoring", "infer").token)
    try:
        yield made
    finally:
        for site in made.sites:
            site.stop()
        for proxy in made.proxies:
            proxy.close()
        admin.close()
        hub.stop()


def infer_body(x: np.ndarray) -> dict:
    return {
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }


def send_requests(url: str, model: str, batches: list[np.ndarray], token: str) -> int:
    """Send each batch as one request; returns how many were answered 200."""
    ok = 0
    with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {token}"}) as http:
        for x in batches:
            response = http.post(f"{url}/v2/models/{model}/infer", json=infer_body(x))
            assert response.status_code == 200, response.text
            ok += 1
    return ok


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def serving(site: SiteProcess, model: str, token: str, version: int = 1) -> bool:
    try:
        response = httpx.get(
            f"{site.url}/v2/models/{model}/ready",
            timeout=2,
            headers={"Authorization": f"Bearer {token}"},
        )
    except httpx.TransportError:
        return False
    return response.status_code == 200 and response.json().get("version") == str(version)


def spooled(site: SiteProcess) -> tuple[int, int]:
    """(windows waiting in the site's telemetry outbox, windows it dropped), read from its
    spool file (SQLite, WAL: readable while the site writes it)."""
    db = sqlite3.connect(f"file:{site.state_dir / 'telemetry.db'}?mode=ro", uri=True, timeout=10)
    try:
        (windows,) = db.execute("SELECT count(*) FROM windows").fetchone()
        (dropped,) = db.execute("SELECT value FROM meta WHERE key = 'dropped_windows'").fetchone()
    except sqlite3.OperationalError:  # not created yet
        return 0, 0
    finally:
        db.close()
    return int(windows), int(dropped)
