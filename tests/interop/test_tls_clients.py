"""Standard clients against a TLS site, as real processes on loopback: Triton's Python HTTP
client (``tritonclient.http`` with ``ssl=True`` and the fleet CA) and the ``curl`` binary
(``--cacert``) read the server and model metadata and run inference; without the fleet CA
both refuse the site, and so do ``modelfleet.Client`` and ``HubClient`` by default.

One hub with TLS, one enrolled site and one gateway (HTTPS with its fleet certificate,
routing from the hub with its own infer token) serve the whole module (a start-up is
seconds). The fixture mints an ``infer`` token that every client here sends; Triton's client
and curl are run against the site and against the gateway alike.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelfleet.errors import NoSiteAvailable, TlsError
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.routing.client import Client
from modelfleet.sim.launcher import (
    GatewayProcess,
    HubProcess,
    SiteProcess,
    issue_gateway_certificate,
)
from tests.conftest import write_tiny_onnx

MODEL = "pump"
OFFSET = 2.0
X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


@dataclass
class TlsSite:
    hub: HubProcess
    site: SiteProcess
    admin_token: str
    gateway: GatewayProcess | None = None
    #: ``Authorization`` for ``/v2`` calls when the fleet issues ``infer`` tokens.
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ca_file(self) -> Path:
        return self.site.ca_file

    def copy_headers(self) -> dict[str, str]:
        """For tritonclient, which adds its own headers (``Inference-Header-Content-Length``)
        to the dict it is given: a shared one would carry them into the next request."""
        return dict(self.headers)

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.site.port}"

    def target(self, which: str) -> tuple[str, str]:
        """``(host:port, base URL)`` of the site or of the gateway in front of it."""
        if which == "gateway":
            if self.gateway is None:  # pragma: no cover - the fixture always starts one
                raise AssertionError("no gateway")
            return f"127.0.0.1:{self.gateway.port}", self.gateway.url
        return self.hostport, self.site.url

    def sites(self) -> list[dict[str, object]]:
        """The static site list an SDK or gateway is given."""
        return [{"name": "plant-a", "url": self.site.url, "labels": {"jurisdiction": "EU"}}]


@pytest.fixture(scope="module")
def tls_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsSite]:
    root = tmp_path_factory.mktemp("interop")
    init = init_hub(root / "hub")
    hub = HubProcess(root / "hub", tls=True).start()
    site: SiteProcess | None = None
    gateway: GatewayProcess | None = None
    try:
        with HubClient(hub.url, init.admin_token, ca_file=hub.ca_file) as admin:
            admin.push(write_tiny_onnx(root / "pump.onnx", OFFSET), MODEL)
            created = admin.add_site("plant-a", {"jurisdiction": "EU"})
            admin.assign("plant-a", f"{MODEL}:1")
            token = admin.create_token("interop", "infer").token
            gateway_token = admin.create_token("interop-gateway", "infer").token
        site = SiteProcess(root / "site-a", hub.url, created["enrollment_token"]).start(60)
        fixture = TlsSite(hub, site, init.admin_token)
        fixture.headers["Authorization"] = f"Bearer {token}"
        _wait_ready(fixture)
        gateway = GatewayProcess(
            ["--hub", hub.url, "--data-region", "EU"],
            extra_env={"MODELFLEET_TOKEN": gateway_token},
            tls_dir=issue_gateway_certificate(root / "hub", root / "gateway-tls"),
        )
        fixture.gateway = gateway.start(60)
        yield fixture
        log = (root / "site-a.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-2000:]
    finally:
        if gateway is not None:
            gateway.stop()
        if site is not None:
            site.stop()
        hub.stop()


def _wait_ready(fixture: TlsSite, timeout: float = 60.0) -> None:
    verify = ssl.create_default_context(cafile=str(fixture.ca_file))
    url = f"{fixture.site.url}/v2/models/{MODEL}/ready"
    deadline = time.monotonic() + timeout
    with httpx.Client(verify=verify, headers=fixture.headers, timeout=5) as client:
        while time.monotonic() < deadline:
            if client.get(url).status_code == 200:
                return
            time.sleep(0.1)
    raise AssertionError(f"{MODEL} not ready at {url} within {timeout:.0f}s")


# --------------------------------------------------------------------------- tritonclient


@pytest.mark.parametrize("which", ["site", "gateway"])
def test_tritonclient_over_https_with_the_fleet_ca(tls_site: TlsSite, which: str) -> None:
    import tritonclient.http as triton

    hostport, _ = tls_site.target(which)
    client = triton.InferenceServerClient(
        hostport, ssl=True, ssl_options={"ca_certs": str(tls_site.ca_file)}
    )
    try:
        assert client.is_server_live(headers=tls_site.copy_headers())
        assert client.is_model_ready(MODEL, headers=tls_site.copy_headers())
        server = client.get_server_metadata(headers=tls_site.copy_headers())
        assert server["name"]
        assert "extensions" in server
        model = client.get_model_metadata(MODEL, headers=tls_site.copy_headers())
        assert model["name"] == MODEL
        assert [(t["name"], t["datatype"]) for t in model["inputs"]] == [("X", "FP32")]
        assert [t["name"] for t in model["outputs"]] == ["Y"]
        for binary in (True, False):  # the binary tensor extension, and plain JSON
            tensor = triton.InferInput("X", list(X.shape), "FP32")
            tensor.set_data_from_numpy(X, binary_data=binary)
            wanted = [triton.InferRequestedOutput("Y", binary_data=binary)]
            result = client.infer(MODEL, [tensor], outputs=wanted, headers=tls_site.copy_headers())
            np.testing.assert_array_equal(result.as_numpy("Y"), X + OFFSET)
    finally:
        client.close()


def test_tritonclient_without_the_fleet_ca_is_refused(tls_site: TlsSite) -> None:
    """Triton's default trust (certifi's roots) does not include the fleet CA."""
    import tritonclient.http as triton

    client = triton.InferenceServerClient(tls_site.hostport, ssl=True)
    try:
        with pytest.raises(ssl.SSLCertVerificationError, match="CERTIFICATE_VERIFY_FAILED"):
            client.get_server_metadata(headers=tls_site.copy_headers())
    finally:
        client.close()


# --------------------------------------------------------------------------- curl


def _curl(tls_site: TlsSite, *args: str, ca: bool = True) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("curl")
    if binary is None:
        pytest.skip("the curl binary is not installed (apt-get install curl)")
    cmd = [binary, "--silent", "--show-error", "--fail-with-body", "--max-time", "20"]
    if ca:
        cmd += ["--cacert", str(tls_site.ca_file)]
    for name, value in tls_site.headers.items():
        cmd += ["--header", f"{name}: {value}"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("which", ["site", "gateway"])
def test_curl_with_cacert_reads_metadata_and_infers(tls_site: TlsSite, which: str) -> None:
    _, base = tls_site.target(which)
    server = _curl(tls_site, f"{base}/v2")
    assert server.returncode == 0, server.stderr
    assert "extensions" in json.loads(server.stdout)

    model = _curl(tls_site, f"{base}/v2/models/{MODEL}")
    assert model.returncode == 0, model.stderr
    assert json.loads(model.stdout)["inputs"][0]["name"] == "X"

    infer = _curl(
        tls_site,
        "--header", "Content-Type: application/json", "--data", json.dumps(BODY),
        f"{base}/v2/models/{MODEL}/infer",
    )  # fmt: skip
    assert infer.returncode == 0, infer.stderr
    (output,) = json.loads(infer.stdout)["outputs"]
    assert output["name"] == "Y"
    assert output["data"] == (X + OFFSET).ravel().tolist()


def test_curl_without_cacert_is_refused(tls_site: TlsSite) -> None:
    answer = _curl(tls_site, f"{tls_site.site.url}/v2", ca=False)
    assert answer.returncode == 60, answer  # curl: the peer certificate cannot be verified
    assert answer.stdout == ""


# --------------------------------------------------------------------------- our clients


def test_hub_client_refuses_a_tls_hub_without_the_ca(
    tls_site: TlsSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELFLEET_CA_FILE", raising=False)
    with (
        HubClient(tls_site.hub.url, tls_site.admin_token) as admin,
        pytest.raises(TlsError, match="does not verify against the fleet CA"),
    ):
        admin.request("GET", "/api/v1/sites")
    # Given the CA, the same call answers: the refusal was the trust, nothing else.
    with HubClient(tls_site.hub.url, tls_site.admin_token, ca_file=tls_site.hub.ca_file) as ok:
        assert ok.request("GET", "/api/v1/sites").status_code == 200


def test_sdk_refuses_a_tls_site_or_hub_without_the_ca(
    tls_site: TlsSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELFLEET_CA_FILE", raising=False)
    token = tls_site.headers.get("Authorization", "").removeprefix("Bearer ") or None
    # A static site list: the site's certificate does not verify, so no site may serve.
    with (
        pytest.raises(NoSiteAvailable, match="does not verify against the fleet CA"),
        Client(sites=tls_site.sites(), token=token, data_region="EU", deadline_s=5) as sdk,
    ):
        sdk.infer(MODEL, {"X": X})
    # Through the hub: refused at the hub already, with what to set.
    with (
        pytest.raises(TlsError, match="MODELFLEET_CA_FILE"),
        Client(tls_site.hub.url, tls_site.admin_token, data_region="EU") as sdk,
    ):
        sdk.infer(MODEL, {"X": X})
    # With the fleet CA, the same site answers.
    with Client(
        sites=tls_site.sites(), token=token, data_region="EU", ca_file=tls_site.ca_file
    ) as sdk:
        np.testing.assert_array_equal(np.asarray(sdk.infer(MODEL, {"X": X})["Y"]), X + OFFSET)
