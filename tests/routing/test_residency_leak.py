"""Issue 17's residency leak, replayed with real processes: data for India must never be
answered by the EU site.

What happened: an IN site started on the EU site's port spent its enrollment token,
registered the EU site's URL and crashed; the SDK and the gateway then sent IN data to that
URL and the EU site answered, and kept doing so once the hub marked the IN site offline.

Here: the EU site listens on port P; the IN site started with ``--port P`` fails with one
line and leaves its token unspent; it enrolls with it afterwards, but with a registered URL
that leads to the EU site (the leak's end state). Through ``modelfleet.Client`` and through
the gateway, an IN request is then refused (online, and offline once it crashed), never
answered by the EU site, and served by the IN site once it is back at its own address. Each
site serves a different version of ``pump`` (EU: Y = X + 1, IN: Y = X + 2), so an answer
says who computed it, and the EU site's own counter shows it never saw an IN request.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import modelfleet
from modelfleet.errors import NoSiteAvailable
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import (
    GatewayProcess,
    HubProcess,
    SiteProcess,
    issue_gateway_certificate,
    wait_http,
)
from tests.conftest import trust_fleet_ca, write_tiny_onnx
from tests.waiting import wait_for

X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
EU_ANSWER = [2.0, 3.0, 4.0, 5.0]
IN_ANSWER = [3.0, 4.0, 5.0, 6.0]
BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


@dataclass
class Fleet:
    root: Path
    hub: HubProcess
    admin: HubClient
    infer: str
    processes: list[SiteProcess | GatewayProcess] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.infer}"}

    def entry(self, site: str) -> dict[str, Any]:
        """The site's entry in the directory the SDK and the gateway route by."""
        doc = httpx.get(f"{self.hub.url}/api/v1/directory", headers=self.auth, timeout=10)
        doc.raise_for_status()
        return next(s for s in doc.json()["sites"] if s["name"] == site)

    def client(self) -> modelfleet.Client:
        """A fresh SDK client (its own cache): it routes by the directory as it is now."""
        cache = self.root / f"sdk-cache-{time.monotonic_ns()}.json"
        return modelfleet.Client(self.hub.url, self.infer, data_region="IN", cache_path=cache)


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    init = init_hub(tmp_path / "hub")
    # A crashed site shows offline after 2 s without a report (agents report every 0.5 s).
    hub = HubProcess(tmp_path / "hub", extra_env={"MODELFLEET_HUB_OFFLINE_AFTER_S": "2"})
    hub.start()
    trust_fleet_ca(monkeypatch, hub.ca_file)
    admin = HubClient(hub.url, init.admin_token)
    fleet = Fleet(tmp_path, hub, admin, admin.create_token("leak", "infer").token)
    try:
        yield fleet
    finally:
        for process in fleet.processes:
            process.stop()
        admin.close()
        hub.stop()


def eu_requests(fleet: Fleet, eu: SiteProcess) -> float:
    """How many inference requests the EU site has answered, from its own counter."""
    text = httpx.get(f"{eu.url}/metrics", headers=fleet.auth, timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("modelfleet_site_inference_requests_total{")
    )


def test_in_data_is_never_answered_by_the_eu_site(fleet: Fleet) -> None:
    admin = fleet.admin
    admin.push(write_tiny_onnx(fleet.root / "eu.onnx", 1.0), "pump")  # pump:1, Y = X + 1
    admin.push(write_tiny_onnx(fleet.root / "in.onnx", 2.0), "pump")  # pump:2, Y = X + 2
    eu_token = admin.add_site("eu-1", {"jurisdiction": "EU"})["enrollment_token"]
    in_token = admin.add_site("in-1", {"jurisdiction": "IN"})["enrollment_token"]
    admin.set_assignments("eu-1", ["pump:1"])
    admin.set_assignments("in-1", ["pump:2"])
    eu = SiteProcess(fleet.root / "eu-state", fleet.hub.url, eu_token)
    fleet.processes.append(eu)
    eu.start(60)
    wait_http(f"{eu.url}/v2/models/pump/ready", 60, eu.proc, token=fleet.infer)

    # 1. The IN site on the EU site's port: one line, exit 1, and its token is not spent.
    in_state = fleet.root / "in-state"
    taken = subprocess.run(
        [sys.executable, "-m", "modelfleet", "site", "serve", "--hub", fleet.hub.url,
         "--enroll", in_token, "--state-dir", str(in_state), "--port", str(eu.port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert taken.returncode == 1, taken.stderr
    lines = taken.stderr.strip().splitlines()
    assert len(lines) == 1, taken.stderr
    assert f"cannot listen on 127.0.0.1:{eu.port}" in lines[0]
    assert "Traceback" not in taken.stderr
    assert fleet.entry("in-1")["url"] is None  # it reported nothing

    # 2. The same token enrolls it afterwards; here with a registered URL that leads to the
    #    EU site, which is where the leak left the directory.
    misdirected = SiteProcess(in_state, fleet.hub.url, in_token)
    misdirected.extra_env["MODELFLEET_SITE_PUBLIC_URL"] = eu.url
    fleet.processes.append(misdirected)
    misdirected.start(60)
    wait_http(f"{misdirected.url}/v2/models/pump/ready", 60, misdirected.proc, token=fleet.infer)
    wait_for(lambda: fleet.entry("in-1")["url"] == eu.url, "in-1 registered at the EU URL")
    in_entry = fleet.entry("in-1")
    assert in_entry["online"] is True
    assert [m["version"] for m in in_entry["models"]] == [2]

    tls_dir = issue_gateway_certificate(fleet.hub.data_dir, fleet.root / "gw-tls")
    gateway = GatewayProcess(
        ["--hub", fleet.hub.url, "--cache", str(fleet.root / "gw-cache.json")],
        extra_env={"MODELFLEET_TOKEN": fleet.infer},
        tls_dir=tls_dir,
    )
    fleet.processes.append(gateway)
    gateway.start(60)
    http = httpx.Client(
        base_url=gateway.url,
        headers={**fleet.auth, "x-modelfleet-data-region": "IN"},
        timeout=30,
    )
    served_before = eu_requests(fleet, eu)

    def refused_everywhere() -> None:
        """IN data through the SDK and the gateway: refused, naming in-1, EU answers none."""
        with fleet.client() as client, pytest.raises(NoSiteAvailable) as caught:
            client.infer("pump", {"X": X}, deadline_s=5)
        assert "in-1" in str(caught.value)
        assert "eu-1" in str(caught.value)  # left out by residency, and said so
        answer = http.post("/v2/models/pump/infer", json=BODY)
        assert answer.status_code == 503, answer.text
        assert "in-1" in answer.json()["error"]
        assert eu_requests(fleet, eu) == served_before

    # 3. In service at that URL: the EU site's certificate does not name in-1, so nothing
    #    is sent to it.
    refused_everywhere()

    # 4. The IN site crashes; once the hub shows it offline, still nothing reaches the EU site.
    misdirected.kill()
    wait_for(lambda: fleet.entry("in-1")["online"] is False, "in-1 offline at the hub")
    refused_everywhere()

    # 5. Back at its own address, the IN site serves IN data; the EU site still saw none.
    misdirected.extra_env.pop("MODELFLEET_SITE_PUBLIC_URL")
    misdirected.start(60)
    wait_for(lambda: fleet.entry("in-1")["url"] == misdirected.url, "in-1 at its own URL")
    with fleet.client() as client:
        served = client.infer_detailed("pump", {"X": X})
        assert served.site == "in-1"
        assert np.asarray(served.outputs["Y"]).tolist() == [IN_ANSWER]

    def gateway_serves_in() -> bool:
        # The gateway re-reads the directory on its own schedule: until then it refuses, and
        # whatever it answers must be the IN site's.
        answer = http.post("/v2/models/pump/infer", json=BODY)
        if answer.status_code == 503:
            return False
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-modelfleet-site"] == "in-1"
        assert answer.json()["outputs"][0]["data"] == IN_ANSWER
        return True

    wait_for(gateway_serves_in, "the gateway serving IN data at in-1")
    http.close()
    assert eu_requests(fleet, eu) == served_before

    # EU data still goes to the EU site: the refusals above were about who answers.
    with modelfleet.Client(
        fleet.hub.url, fleet.infer, data_region="EU", cache_path=fleet.root / "eu-cache.json"
    ) as client:
        assert np.asarray(client.infer("pump", {"X": X})["Y"]).tolist() == [EU_ANSWER]
