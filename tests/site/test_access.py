"""The per-request check of sites and gateways: tokens from the grant list, fleet peers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modelfleet.grants import Grant, hash_secret, sign_grants
from modelfleet.pki import site_identity
from modelfleet.pki.identity import gateway_identity, hub_identity
from modelfleet.pki.tls import PEER_EXTENSION, Peer
from modelfleet.registry.keyset import KeySet
from modelfleet.site.access import SiteAccess

HUB = Ed25519PrivateKey.generate()


def offered(holder: str, *secrets: str, at: datetime | None = None) -> dict[str, str]:
    grants = [Grant(f"t-{s}", s, hash_secret(s)) for s in secrets]
    text, signature = sign_grants(holder, grants, HUB, issued_at=at or datetime.now(UTC))
    return {"text": text, "signature": signature}


def scope(token: str | None = None, peer: Peer | None = None) -> dict[str, object]:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    return {"headers": headers, "extensions": {PEER_EXTENSION: peer} if peer else {}}


def test_lists_are_checked_saved_reloaded_and_never_rolled_back(tmp_path: Path) -> None:
    path = tmp_path / "tls" / "grants.json"
    access = SiteAccess("plant-a", lambda: KeySet.of(HUB), path)
    assert access.check(scope("app"), "pump") == (401, "token not valid at plant-a")
    old = offered("plant-a", "app", "gone", at=datetime.now(UTC) - timedelta(minutes=5))
    assert access.accept(old)
    assert access.check(scope("gone"), "pump") is None
    assert access.accept(offered("plant-a", "app"))  # "gone" revoked
    assert access.check(scope("gone"), "pump") is not None
    assert not access.accept(old)  # an older list is refused
    assert not access.accept(offered("plant-b", "gone"))  # another site's
    other = Ed25519PrivateKey.generate()
    forged = sign_grants("plant-a", [Grant("x", "x", hash_secret("x"))], other,
                         issued_at=datetime.now(UTC))  # fmt: skip
    assert not access.accept({"text": forged[0], "signature": forged[1]})
    saved = json.loads(path.read_text())["text"]
    assert hash_secret("app") in saved
    assert hash_secret("gone") not in saved

    restarted = SiteAccess("plant-a", lambda: KeySet.of(HUB), path)
    assert restarted.load()
    assert restarted.check(scope("app"), "pump") is None
    assert restarted.check(scope("gone"), "pump") == (401, "token not valid at plant-a")
    path.write_text(path.read_text().replace("plant-a", "plant-b"))
    assert not SiteAccess("plant-a", lambda: KeySet.of(HUB), path).load()


def test_fleet_certificates_of_sites_and_gateways_are_admitted() -> None:
    access = SiteAccess("plant-a", lambda: KeySet.of(HUB), None)
    assert access.check(scope(peer=Peer(site_identity("edge"), "1f")), "pump") is None
    assert access.check(scope(peer=Peer(gateway_identity("gw"), "2f")), "pump") is None
    assert access.check(scope(peer=Peer(hub_identity(), "3f")), "pump") is not None
    assert access.check(scope(peer=Peer(None, "4f")), "pump") is not None
