"""Enrollment through the hub's API is all or nothing (issue 16): a refused CSR leaves the
token usable, and a re-enrollment swaps the site's bearer token in one step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from modelfleet.pki import generate_key, make_csr, site_identity
from tests.conftest import InProcessHub


def _hub(hub_factory: Callable[..., InProcessHub]) -> tuple[InProcessHub, str]:
    hub = hub_factory(auth_failures_per_minute=100)
    created = hub.client.post(
        "/api/v1/sites", json={"name": "plant-a", "labels": {}}, headers=hub.headers()
    )
    created.raise_for_status()
    return hub, str(created.json()["enrollment_token"])


def _enroll(hub: InProcessHub, token: str, csr: str | None = None) -> Any:
    return hub.client.post("/api/v1/enroll", json={"token": token, "csr": csr})


def _rsa_csr() -> str:
    """A well-formed CSR the fleet CA refuses: its key is RSA, not ECDSA."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plant-a")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _desired_state(hub: InProcessHub, bearer: str) -> int:
    return hub.client.get(
        "/api/v1/sites/plant-a/desired-state", headers=hub.headers(bearer)
    ).status_code


def test_a_refused_csr_leaves_the_enrollment_token_usable(
    hub_factory: Callable[..., InProcessHub],
) -> None:
    hub, token = _hub(hub_factory)
    for bad in ("not a csr", _rsa_csr()):
        refused = _enroll(hub, token, bad)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "invalid_input"
    site = hub.client.get("/api/v1/sites/plant-a", headers=hub.headers()).json()
    assert site["enrolled_at"] is None
    good = make_csr(generate_key(), site_identity("plant-a"), hosts=("127.0.0.1",))
    enrolled = _enroll(hub, token, good.decode())
    assert enrolled.status_code == 200, enrolled.text
    body = enrolled.json()
    assert body["site"] == "plant-a"
    assert body["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert _desired_state(hub, body["token"]) == 200
    # A used token is refused as such before its CSR is looked at, bad or good.
    for csr in ("not a csr", good.decode()):
        again = _enroll(hub, token, csr)
        assert again.status_code == 401
        assert "already used" in again.json()["error"]["message"]


def test_reenrollment_replaces_the_sites_bearer_token(
    hub_factory: Callable[..., InProcessHub],
) -> None:
    hub, token = _hub(hub_factory)
    first = _enroll(hub, token).json()["token"]
    assert _desired_state(hub, first) == 200
    reissued = hub.client.post("/api/v1/sites/plant-a/enrollment", headers=hub.headers())
    second = _enroll(hub, reissued.json()["enrollment_token"]).json()["token"]
    assert _desired_state(hub, first) == 401  # at once, not after a cache expiry
    assert _desired_state(hub, second) == 200
    tokens = hub.client.get("/api/v1/tokens", headers=hub.headers()).json()
    site_tokens = [t for t in tokens if t["role"] == "site"]
    assert [t["revoked_at"] is None for t in site_tokens] == [False, True]
