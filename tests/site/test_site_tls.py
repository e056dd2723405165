"""A site of an HTTPS hub, as real processes on loopback: it enrolls through the token's CA
fingerprint, serves its OIP endpoint over HTTPS with its own certificate, keeps what it
pinned unless re-enrolled on purpose, and renews its certificate without a restart."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from cryptography import x509

from modelfleet.errors import InvalidInput, ModelfleetError, PeerMismatch
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.pki import identity_of, site_identity
from modelfleet.pki.tls import TlsFiles
from modelfleet.routing.client import Client
from modelfleet.routing.directory import Site, SiteDirectory
from modelfleet.routing.router import Router
from modelfleet.settings import SiteSettings
from modelfleet.sim.launcher import HubProcess, SiteProcess
from modelfleet.site.agent import SiteAgent
from modelfleet.site.state import Credentials, SiteState
from modelfleet.transport.client import Origin, Pool
from tests.waiting import wait_for


@dataclass
class TlsFleet:
    root: Path
    hub: HubProcess
    admin: HubClient
    #: An infer token: what the sites' /v2 require.
    infer: str = ""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.infer}"}

    def token(self, name: str) -> str:
        body = self.admin.request(
            "POST", "/api/v1/sites", json={"name": name, "labels": {"region": "eu-west"}}
        ).json()
        return str(body["enrollment_token"])

    def reissue(self, name: str) -> str:
        path = f"/api/v1/sites/{name}/enrollment"
        return str(self.admin.request("POST", path).json()["enrollment_token"])

    def site_view(self, name: str) -> dict[str, object]:
        body: dict[str, object] = self.admin.request("GET", f"/api/v1/sites/{name}").json()
        return body


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[TlsFleet]:
    init = init_hub(tmp_path / "hub")
    hub = HubProcess(tmp_path / "hub", tls=True).start()
    admin = HubClient(hub.url, init.admin_token, ca_file=hub.ca_file)
    try:
        yield TlsFleet(tmp_path, hub, admin, admin.create_token("tls-tests", "infer").token)
    finally:
        admin.close()
        hub.stop()


@pytest.fixture
def sites() -> Iterator[list[SiteProcess]]:
    started: list[SiteProcess] = []
    yield started
    for site in started:
        site.stop()


def served_certificate(port: int, ca_file: Path) -> x509.Certificate:
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_a_site_serves_https_with_the_certificate_that_names_it(
    fleet: TlsFleet, sites: list[SiteProcess], tiny_onnx: Callable[..., Path]
) -> None:
    fleet.admin.push(tiny_onnx(offset=2.0), "pump", alias="production")
    site = SiteProcess(fleet.root / "site-a", fleet.hub.url, fleet.token("plant-a")).start(60)
    sites.append(site)
    assert site.url.startswith("https://")
    # What it pinned is the hub's CA, and the certificate it serves with names the site.
    assert site.ca_file.read_bytes() == fleet.hub.ca_file.read_bytes()
    assert identity_of(served_certificate(site.port, site.ca_file)) == site_identity("plant-a")

    fleet.admin.assign("plant-a", "pump@production")
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    context = ssl.create_default_context(cafile=str(site.ca_file))
    with httpx.Client(verify=context, headers=fleet.auth) as client:
        wait_for(
            lambda: client.get(f"{site.url}/v2/models/pump/ready").status_code == 200,
            "pump ready over https",
        )
        answer = client.post(f"{site.url}/v2/models/pump/infer", json=body, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [3.0, 4.0, 5.0, 6.0]
    # The hub's directory has the https address the site reported.
    wait_for(lambda: fleet.site_view("plant-a").get("url") == site.url, "the reported url")
    # The SDK, given the fleet CA, finds the site through the HTTPS hub and calls it.
    sdk = Client(fleet.hub.url, fleet.infer, ca_file=fleet.hub.ca_file, data_region="*")
    try:
        answered = sdk.infer("pump", np.array([[1, 2, 3, 4]], dtype=np.float32))
        assert np.asarray(answered["Y"]).tolist() == [[3.0, 4.0, 5.0, 6.0]]
    finally:
        sdk.close()

    # Without the fleet CA the site is not trusted; plain HTTP to its port gets nowhere.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{site.url}/v2/health/ready", timeout=10)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{site.port}/v2/health/ready", timeout=10)

    # A fleet client that chose another site refuses this one before sending anything.
    async def dial_as_plant_b() -> None:
        pool = Pool(tls=TlsFiles(site.ca_file))
        try:
            origin = Origin.parse(site.url, site_identity("plant-b"))
            await pool.request(origin, "GET", "/v2/health/ready")
        finally:
            pool.close()

    with pytest.raises(PeerMismatch, match="plant-b"):
        asyncio.run(dial_as_plant_b())

    # The router, given that URL under another site's name, never sends it the request; under
    # the site's own name it answers.
    async def route(name: str) -> int:
        directory = SiteDirectory(sites=[Site(name, site.url, {"jurisdiction": "EU"})])
        router = Router(directory, tls=TlsFiles(site.ca_file), token=fleet.infer)
        try:
            routed = await router.send(
                "pump", "/v2/models/pump/infer", data_region="*", body=json.dumps(body).encode()
            )
            return routed.response.status
        finally:
            await router.aclose()

    assert asyncio.run(route("plant-a")) == 200
    with pytest.raises(ModelfleetError, match="plant-b"):
        asyncio.run(route("plant-b"))
    log = (site.state_dir.parent / "site-a.log").read_text(errors="replace")
    assert "Traceback" not in log


def test_an_enrolled_site_refuses_a_second_enrollment_unless_told(
    fleet: TlsFleet, tmp_path: Path
) -> None:
    state_dir = tmp_path / "site-a"
    first = SiteAgent(
        SiteSettings(state_dir=state_dir, port=1), hub_url=fleet.hub.url,
        enrollment_token=fleet.token("plant-a"),
    )  # fmt: skip
    first.stop()
    pinned = (state_dir / "tls" / "ca.pem").read_bytes()
    serial = x509.load_pem_x509_certificate((state_dir / "tls" / "site.pem").read_bytes())

    # The CLI, as an operator would run it again with a fresh token: one line, exit 1.
    again = fleet.reissue("plant-a")
    run = subprocess.run(
        [sys.executable, "-m", "modelfleet", "site", "serve", "--hub", fleet.hub.url,
         "--enroll", again, "--state-dir", str(state_dir), "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert "already enrolled as site 'plant-a'" in run.stderr
    assert "--re-enroll" in run.stderr
    assert "Traceback" not in run.stderr
    assert (state_dir / "tls" / "ca.pem").read_bytes() == pinned

    # Told to, it enrolls again: a new certificate, the token now spent.
    second = SiteAgent(
        SiteSettings(state_dir=state_dir, port=1), hub_url=fleet.hub.url,
        enrollment_token=again, re_enroll=True,
    )  # fmt: skip
    second.stop()
    renewed = x509.load_pem_x509_certificate((state_dir / "tls" / "site.pem").read_bytes())
    assert renewed.serial_number != serial.serial_number
    assert identity_of(renewed) == site_identity("plant-a")


def test_the_agent_renews_its_certificate_and_serves_the_new_one_without_a_restart(
    fleet: TlsFleet, tmp_path: Path
) -> None:
    # A hub whose site certificates live ~9 s: due for renewal (two thirds in) almost at once.
    fleet.hub.stop()
    short = HubProcess(
        fleet.hub.data_dir, tls=True, extra_env={"MODELFLEET_HUB_SITE_CERTIFICATE_DAYS": "0.0001"}
    ).start()
    try:
        admin = HubClient(short.url, fleet.admin.token, ca_file=short.ca_file)
        token = str(
            admin.request("POST", "/api/v1/sites", json={"name": "plant-a", "labels": {}}).json()[
                "enrollment_token"
            ]
        )
        site = SiteProcess(tmp_path / "site-a", short.url, token).start(60)
        try:
            enrolled = x509.load_pem_x509_certificate(
                (site.state_dir / "tls" / "site.pem").read_bytes()
            )
            wait_for(
                lambda: (
                    served_certificate(site.port, site.ca_file).serial_number
                    != enrolled.serial_number
                ),
                "the renewed certificate served",
            )
            # The agent's hub connection moved to the renewed certificate and goes on working.
            seen = admin.request("GET", "/api/v1/sites/plant-a").json()["last_seen"]
            wait_for(
                lambda: admin.request("GET", "/api/v1/sites/plant-a").json()["last_seen"] != seen,
                "a report after the renewal",
            )
        finally:
            site.stop()
        admin.close()
    finally:
        short.stop()


def test_an_unreadable_pinned_key_stops_the_start_with_one_line(tmp_path: Path) -> None:
    state = SiteState(tmp_path / "state.db")
    state.save_credentials(Credentials("http://127.0.0.1:1", "plant-a", "t", "not a key"))
    state.close()
    with pytest.raises(InvalidInput, match=r"unreadable hub key.*re-enroll this site"):
        SiteAgent(SiteSettings(state_dir=tmp_path))
