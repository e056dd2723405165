"""The gateway over HTTPS, as real processes: its certificate from ``hub cert issue``, clients
with and without the fleet CA, plain HTTP to the TLS port, a reissued certificate picked up
without a restart, and sites verified by the identity their certificate names."""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import certifi
import httpx
import pytest
from cryptography import x509

from modelfleet.hub.bootstrap import init_hub
from modelfleet.pki.ca import FleetCA
from modelfleet.pki.identity import gateway_identity, identity_of
from modelfleet.sim.launcher import GatewayProcess, issue_gateway_certificate
from tests.routing.conftest import GeoFleet

BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}]}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelfleet", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def one_line_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    assert text in result.stderr, result.stderr


def verified(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def served_certificate(port: int, ca_file: Path) -> x509.Certificate:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        verified(ca_file).wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_hub_cert_issue_writes_a_bounded_gateway_certificate(tmp_path: Path) -> None:
    init_hub(tmp_path / "hub")
    out = tmp_path / "gw"
    done = cli(
        "hub", "cert", "issue", "--data-dir", str(tmp_path / "hub"), "--name", "edge-gw",
        "--san", "gw.example.com", "--san", "10.0.0.5", "--out", str(out), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["identity"] == "modelfleet://gateway/edge-gw"
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert (out / "ca.pem").read_bytes() == (tmp_path / "hub" / "tls" / "ca.pem").read_bytes()
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert identity_of(cert) == gateway_identity("edge-gw")
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "gw.example.com"}
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "10.0.0.5",
    }
    life = cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=89) < life <= timedelta(days=90)

    issue = ["hub", "cert", "issue", "--data-dir", str(tmp_path / "hub"), "--out", str(out)]
    one_line_error(cli(*issue, "--name", "g", "--days", "400"), "less than or equal to 397")
    one_line_error(cli(*issue, "--name", "no/slash"), "gateway name")
    one_line_error(cli(*issue, "--name", "g", "--san", "*.x"), "invalid host name")
    elsewhere = ["hub", "cert", "issue", "--data-dir", str(tmp_path / "none"), "--out", str(out)]
    one_line_error(cli(*elsewhere, "--name", "g"), "hub init")
    # None of the refusals touched the certificate issued first.
    assert x509.load_pem_x509_certificate((out / "cert.pem").read_bytes()) == cert


@pytest.fixture
def tls_gateway(geo_fleet: GeoFleet, tmp_path: Path) -> Iterator[GatewayProcess]:
    """A gateway on HTTPS in front of the fleet's sites (a static list of their https URLs)."""
    sites = tmp_path / "sites.json"
    sites.write_text(json.dumps(geo_fleet.static_sites()))
    tls_dir = issue_gateway_certificate(geo_fleet.hub.data_dir, tmp_path / "gw-tls", "edge-gw")
    process = GatewayProcess(
        ["--sites", str(sites), "--data-region", "EU", "--log-level", "info"],
        tls_dir=tls_dir,
        log_path=tmp_path / "gateway.log",
    )
    try:
        yield process.start(timeout=60)
    finally:
        process.stop()


def test_gateway_serves_https_only_to_clients_that_trust_the_fleet_ca(
    tls_gateway: GatewayProcess, tmp_path: Path
) -> None:
    url = tls_gateway.url
    assert url.startswith("https://")
    served = served_certificate(tls_gateway.port, tls_gateway.ca_file)
    assert identity_of(served) == gateway_identity("edge-gw")
    with httpx.Client(base_url=url, verify=verified(tls_gateway.ca_file), timeout=10) as http:
        answer = http.post("/v2/models/pump/infer", json=BODY)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-modelfleet-site"] in {"eu-a", "eu-b"}

    # The public roots alone (certifi's: this session's SSL_CERT_FILE names the fleet CA).
    public_roots = ssl.create_default_context(cafile=certifi.where())
    # Without the fleet CA (public roots only) and with another fleet's CA: refused
    # by the client's verification, nothing sent.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{url}/v2/health/live", verify=public_roots, trust_env=False)
    other = FleetCA.create(tmp_path / "other-ca")
    wrong = ssl.create_default_context(cadata=other.pem.decode())
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{url}/v2/health/live", verify=wrong)
    # Plain HTTP to the TLS port: no HTTP answer at all (the handshake never starts).
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{tls_gateway.port}/v2/health/live", timeout=10)

    # The gateway shrugged all three off: still serving, and no traceback in its log.
    with httpx.Client(verify=verified(tls_gateway.ca_file), timeout=10) as http:
        assert http.get(f"{url}/v2/health/live").status_code == 200
    assert tls_gateway.log_path is not None
    log = tls_gateway.log_path.read_text()
    assert "Traceback" not in log, log
    assert "gateway on https://" in log


def test_a_reissued_gateway_certificate_is_served_without_a_restart(
    geo_fleet: GeoFleet, tls_gateway: GatewayProcess
) -> None:
    assert tls_gateway.tls_dir is not None
    before = served_certificate(tls_gateway.port, tls_gateway.ca_file)
    pid = tls_gateway.proc.pid if tls_gateway.proc else None
    issue_gateway_certificate(geo_fleet.hub.data_dir, tls_gateway.tls_dir, "edge-gw")
    fresh = x509.load_pem_x509_certificate((tls_gateway.tls_dir / "cert.pem").read_bytes())
    # The handshake that notices the new file reloads it (that one still presents the old
    # certificate); every later one presents the new one.
    served_certificate(tls_gateway.port, tls_gateway.ca_file)
    after = served_certificate(tls_gateway.port, tls_gateway.ca_file)
    assert after.serial_number == fresh.serial_number != before.serial_number
    assert tls_gateway.proc is not None
    assert tls_gateway.proc.pid == pid
    assert tls_gateway.proc.poll() is None
    with httpx.Client(verify=verified(tls_gateway.ca_file), timeout=10) as http:
        assert http.post(f"{tls_gateway.url}/v2/models/pump/infer", json=BODY).status_code == 200


def test_the_gateway_refuses_a_site_whose_certificate_names_another(
    geo_fleet: GeoFleet, tmp_path: Path
) -> None:
    """The list says eu-a is at the address where eu-b answers: eu-b's certificate does not
    name eu-a, so the gateway sends nothing there and says why."""
    labels = geo_fleet.labels["eu-a"]
    sites = tmp_path / "sites.json"
    listed = {"name": "eu-a", "url": geo_fleet.links["eu-b"].url, "labels": labels}
    sites.write_text(json.dumps([listed]))
    tls_dir = issue_gateway_certificate(geo_fleet.hub.data_dir, tmp_path / "gw-tls")
    process = GatewayProcess(
        ["--sites", str(sites), "--data-region", "EU"],
        tls_dir=tls_dir,
        log_path=tmp_path / "gateway.log",
    )
    try:
        process.start(timeout=60)
        with httpx.Client(verify=verified(process.ca_file), timeout=30) as http:
            refused = http.post(f"{process.url}/v2/models/pump/infer", json=BODY)
        assert refused.status_code >= 500, refused.text
        assert "is not site eu-a" in refused.json()["error"], refused.text
    finally:
        process.stop()
    assert "Traceback" not in (tmp_path / "gateway.log").read_text()


def test_gateway_plain_http_needs_the_flag_and_loopback(tmp_path: Path) -> None:
    sites = tmp_path / "sites.json"
    sites.write_text("[]")
    base = ["gateway", "serve", "--sites", str(sites), "--port", "0"]
    one_line_error(cli(*base), "the gateway serves HTTPS: give --tls-dir")
    one_line_error(
        cli(*base, "--insecure-http", "--host", "0.0.0.0"), "refusing plain HTTP on 0.0.0.0"
    )
    one_line_error(cli(*base, "--insecure-http-allow-remote"), "only makes sense with")
    one_line_error(cli(*base, "--tls-dir", str(tmp_path)), "is not a certificate directory")
    plain = GatewayProcess(["--sites", str(sites)], insecure_http=True)
    try:
        plain.start(timeout=60)
        assert plain.url.startswith("http://")
        assert httpx.get(f"{plain.url}/v2/health/live", timeout=10).status_code == 200
    finally:
        plain.stop()
