"""The fleet CA and TLS contexts, with real TLS handshakes on loopback."""

from __future__ import annotations

import contextlib
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from modelfleet.errors import Conflict, InvalidInput
from modelfleet.pki import (
    FleetCA,
    fingerprint,
    generate_key,
    hub_identity,
    identity_of,
    make_csr,
    site_identity,
)
from modelfleet.pki.keys import save_private_key
from modelfleet.pki.tls import client_context, peer_identity, server_context

DAY = timedelta(days=1)


@pytest.fixture
def ca(tmp_path: Path) -> FleetCA:
    return FleetCA.create(tmp_path / "ca")


def write_pair(directory: Path, name: str, cert_pem: bytes, key: ec.EllipticCurvePrivateKey):
    save_private_key(key, directory / f"{name}.key")
    (directory / f"{name}.pem").write_bytes(cert_pem)
    return directory / f"{name}.pem", directory / f"{name}.key"


@contextmanager
def tls_server(context: ssl.SSLContext) -> Iterator[tuple[int, list[object]]]:
    """Accepts connections, completes the handshake and records the peer's identity."""
    seen: list[object] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)

    def serve() -> None:
        while True:
            try:
                raw, _ = server.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    seen.append(peer_identity(conn))
                    conn.sendall(b"hello")
            except (ssl.SSLError, OSError) as exc:
                seen.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], seen
    finally:
        # shutdown wakes the thread blocked in accept() at once; close alone leaves it
        # waiting out its 10 s timeout.
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(10)


def connect(port: int, context: ssl.SSLContext, host: str = "127.0.0.1") -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname=host)


def test_ca_files_are_private_and_never_replaced(tmp_path: Path, ca: FleetCA) -> None:
    mode = stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode)
    assert mode == 0o600
    with pytest.raises(Conflict, match="already exists"):
        FleetCA.create(tmp_path / "ca")
    loaded = FleetCA.load(tmp_path / "ca")
    assert loaded.fingerprint == ca.fingerprint
    assert ca.fingerprint.startswith("sha256:")
    assert len(ca.fingerprint) == len("sha256:") + 64


def test_hub_certificate_verifies_and_names_the_hub(tmp_path: Path, ca: FleetCA) -> None:
    key = generate_key()
    issued = ca.issue_for_key(key, hub_identity(), ("localhost", "127.0.0.1", "::1"), 30 * DAY)
    cert, key_file = write_pair(tmp_path, "hub", issued.pem, key)
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    with tls_server(server_context(cert, key_file)) as (port, _):
        with connect(port, client_context(tmp_path / "ca.pem")) as conn:
            assert peer_identity(conn) == hub_identity()
            assert conn.recv(5) == b"hello"
        # The host name is checked as well: a name the certificate lacks is refused.
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(port, client_context(tmp_path / "ca.pem"), host="other.example")
        # Another CA, or none at all: refused.
        other = FleetCA.create(tmp_path / "other")
        (tmp_path / "other.pem").write_bytes(other.pem)
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(port, client_context(tmp_path / "other.pem"))
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(port, client_context(None))


def test_site_certificate_from_its_csr_authenticates_the_site(tmp_path: Path, ca: FleetCA) -> None:
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    hub_key = generate_key()
    hub = ca.issue_for_key(hub_key, hub_identity(), ("127.0.0.1",), DAY)
    hub_cert, hub_key_file = write_pair(tmp_path, "hub", hub.pem, hub_key)
    site_key = generate_key()  # made at the site; only the CSR travels
    # The CSR asks for another identity: the hub's records decide, not the request.
    csr = make_csr(site_key, site_identity("someone-else"), ("plant.local", "10.0.0.7"))
    issued = ca.issue_from_csr(csr, site_identity("plant-eu-west"), DAY)
    assert issued.identity == site_identity("plant-eu-west")
    sans = issued.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["plant.local"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    site_cert, site_key_file = write_pair(tmp_path, "site", issued.pem, site_key)
    context = server_context(hub_cert, hub_key_file, client_ca_file=tmp_path / "ca.pem")
    with tls_server(context) as (port, seen):
        mtls = client_context(tmp_path / "ca.pem", cert_file=site_cert, key_file=site_key_file)
        with connect(port, mtls) as conn:
            conn.recv(5)
        with connect(port, client_context(tmp_path / "ca.pem")) as conn:  # no certificate
            conn.recv(5)
    assert seen == [site_identity("plant-eu-west"), None]


def test_csr_checks(ca: FleetCA) -> None:
    key = generate_key()
    site = site_identity("s1")
    for hosts, match in [
        (("*.example.com",), "invalid host name"),
        (tuple(f"h{i}.example" for i in range(33)), "at most 32"),
    ]:
        with pytest.raises(InvalidInput, match=match):
            ca.issue_from_csr(_raw_csr(key, hosts), site, DAY)
    with pytest.raises(InvalidInput, match="hub's own host"):
        ca.issue_from_csr(
            make_csr(key, site, ("127.0.0.1",)), site, DAY, refused_hosts=frozenset({"127.0.0.1"})
        )
    with pytest.raises(InvalidInput, match="not a PEM certificate signing request"):
        ca.issue_from_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n", site, DAY)
    with pytest.raises(InvalidInput, match="larger than"):
        ca.issue_from_csr(b"x" * 20000, site, DAY)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidInput, match="ECDSA"):
        ca.issue_from_csr(_raw_csr(rsa_key, ()), site, DAY)
    # A CSR whose signature does not match its key (its bytes altered after signing).
    good = _raw_csr(key, ("a.example",))
    der = bytearray(x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0xFF
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(InvalidInput):
        ca.issue_from_csr(tampered, site, DAY)


def test_certificates_never_outlive_the_ca_and_start_in_the_past(ca: FleetCA) -> None:
    issued = ca.issue_for_key(generate_key(), site_identity("s1"), (), timedelta(days=100_000))
    assert issued.not_after <= ca.cert.not_valid_after_utc
    assert issued.cert.not_valid_before_utc < ca.cert.not_valid_after_utc
    assert identity_of(ca.cert) is None  # the CA names no holder
    assert fingerprint(issued.cert) != ca.fingerprint


def _raw_csr(key: object, hosts: tuple[str, ...]) -> bytes:
    """A CSR built without our validation, as a hostile client would send it."""
    names = [x509.DNSName(h) for h in hosts]
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
