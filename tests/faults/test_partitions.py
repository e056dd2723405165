"""Black-hole partitions (issue #20): packets vanish, nothing is refused.

One real hub and one real site for the module. Two WAN links: one in front of the site's
inference port (what the SDK dials), one between the site and the hub (the site's
``--hub``; the hub's certificate names 127.0.0.1, so a loopback proxy port works). A
black-holed link accepts connections and never delivers, the case a client deadline and
the site's hub timeouts exist for: calls must fail within a bound, never hang, and
everything must heal after ``restore()`` with telemetry exact (nothing lost, nothing twice).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelfleet.errors import DeadlineExceeded
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.routing.client import Client
from modelfleet.sim.launcher import HubProcess, SiteProcess
from modelfleet.sim.wan import WanLink
from tests.conftest import trust_fleet_ca, write_tiny_onnx
from tests.waiting import wait_for

MODEL = "pump"
SITE = "plant"
DEADLINE_S = 2.0
#: A site silent for 2 s is offline (reports every 0.5 s: the launcher's default).
HUB_ENV = {"MODELFLEET_HUB_OFFLINE_AFTER_S": "2"}
SITE_ENV = {
    "MODELFLEET_SITE_TELEMETRY_WINDOW_S": "0.2",
    "MODELFLEET_SITE_TELEMETRY_SHIP_INTERVAL_S": "0.2",
    "MODELFLEET_SITE_RETRY_MAX_S": "1",
    "MODELFLEET_SITE_LONG_POLL_S": "1",
}
X = np.ones((1, 4), dtype=np.float32)


@dataclass
class Fleet:
    hub: HubProcess
    admin: HubClient
    site: SiteProcess
    to_hub: WanLink  # site -> hub
    to_site: WanLink  # SDK -> site
    infer_token: str
    #: Inference calls the site answered (every test adds its own): the hub's total.
    served: int = 0

    def infer_direct(self) -> None:
        """One call straight to the site's port (no link), which must succeed."""
        body = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}]}
        answer = httpx.post(
            f"{self.site.url}/v2/models/{MODEL}/infer",
            json=body,
            timeout=10,
            headers={"Authorization": f"Bearer {self.infer_token}"},
        )
        assert answer.status_code == 200, answer.text
        self.served += 1

    def client(self) -> Client:
        """The SDK aimed at the site through ``to_site``, one attempt, DEADLINE_S each."""
        return Client(
            sites=[{"name": SITE, "url": self.to_site.url}],
            token=self.infer_token,
            deadline_s=DEADLINE_S,
            hedge=False,
            data_region="*",  # no residency constraints
            ca_file=self.site.ca_file,
            cache_path=self.site.state_dir.parent / "directory.json",
        )

    def online(self) -> bool:
        return bool(self.admin.get_site(SITE).online)

    def hub_requests(self) -> int:
        for row in self.admin.get_telemetry_status()["sites"]:
            if row["site"] == SITE:
                return sum(int(m["requests_total"]) for m in row["models"] if m["model"] == MODEL)
        return 0


def _serving(site: SiteProcess, token: str) -> bool:
    try:
        answer = httpx.get(
            f"{site.url}/v2/models/{MODEL}/ready",
            timeout=2,
            headers={"Authorization": f"Bearer {token}"},
        )
    except httpx.TransportError:
        return False
    return answer.status_code == 200


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root: Path = tmp_path_factory.mktemp("partitions")
    init = init_hub(root / "hub")
    hub = HubProcess(root / "hub", extra_env=HUB_ENV).start()
    admin = HubClient(hub.url, init.admin_token, ca_file=hub.ca_file)
    to_hub = WanLink(("127.0.0.1", hub.port), scheme="https").start()
    site: SiteProcess | None = None
    to_site: WanLink | None = None
    try:
        with pytest.MonkeyPatch.context() as mp:
            trust_fleet_ca(mp, hub.ca_file)
            admin.push(write_tiny_onnx(root / "tiny.onnx"), MODEL)
            token = admin.create_token("partitions", "infer").token
            enrollment = admin.add_site(SITE, {"region": "eu-west"}).enrollment_token
            site = SiteProcess(root / SITE, to_hub.url, str(enrollment), extra_env=SITE_ENV).start(
                60
            )
            to_site = WanLink(("127.0.0.1", site.port), scheme="https").start()
            admin.assign(SITE, f"{MODEL}:1")
            wait_for(lambda: _serving(site, str(token)), f"{SITE} to serve {MODEL}", 120)
            yield Fleet(hub, admin, site, to_hub, to_site, str(token))
    finally:
        if to_site is not None:
            to_site.stop()
        if site is not None:
            site.stop()
        to_hub.stop()
        admin.close()
        hub.stop()


def test_sdk_call_through_a_blackhole_fails_by_its_deadline_then_heals(fleet: Fleet) -> None:
    """Black-holed SDK -> site: the call fails with DeadlineExceeded within a bound (it
    never hangs on a connection that accepts and never answers); after restore, a new
    call succeeds."""
    fleet.to_site.cut("blackhole")
    try:
        # A fresh client: no kept-alive connection, so the held bytes are a TLS hello
        # only, and no request reaches the site after restore (the hub's total stays exact).
        with fleet.client() as client:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                client.infer(MODEL, {"X": X})
            elapsed = time.monotonic() - started
        assert elapsed < 10 * DEADLINE_S, elapsed
    finally:
        fleet.to_site.restore()
    with fleet.client() as client:
        outputs = client.infer(MODEL, {"X": X})
    fleet.served += 1
    assert set(outputs) == {"Y"}


def test_site_cut_off_from_hub_keeps_serving_goes_offline_and_returns_exact(
    fleet: Fleet,
) -> None:
    """Black-holed site -> hub: the site keeps answering inference; the hub marks it
    offline; after restore it is online again and the hub counts every request served."""
    wait_for(fleet.online, f"{SITE} online before the cut", 60)
    fleet.to_hub.cut("blackhole")
    try:
        # Served while the hub cannot hear the site, until the hub gives up on it.
        wait_for(
            lambda: (fleet.infer_direct(), not fleet.online())[1],
            f"the hub to mark {SITE} offline",
            60,
        )
        for _ in range(5):
            fleet.infer_direct()
    finally:
        fleet.to_hub.restore()
    wait_for(fleet.online, f"{SITE} back online", 60)
    wait_for(
        lambda: fleet.hub_requests() >= fleet.served,
        f"the hub to count {fleet.served} requests",
        60,
    )
    assert fleet.hub_requests() == fleet.served
