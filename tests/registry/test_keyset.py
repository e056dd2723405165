"""Key sets: rotation by endorsement, rollback refused, retirement, manifests across keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modelfleet.errors import SignatureInvalid, VerificationError
from modelfleet.registry.keyset import KeyEntry, KeySet, accept_keyset, endorse, sign_keyset
from modelfleet.registry.manifest import build_manifest, sign_manifest, verify_manifest
from modelfleet.registry.signing import key_id

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def entry(key: Ed25519PrivateKey, by: Ed25519PrivateKey | None = None, **kw: bool) -> KeyEntry:
    return KeyEntry(
        key.public_key(),
        NOW,
        endorsed_by=key_id(by) if by else None,
        endorsement=endorse(by, key.public_key()) if by else None,
        **kw,
    )


def manifest(key: Ed25519PrivateKey, version: int = 1) -> tuple[str, str]:
    doc = build_manifest(
        name="m", version=version, digest="a" * 64, size=1,
        io={"inputs": [], "outputs": []}, opset=17,
        framework=None, training_regions=[], parent_version=None, created_at=NOW,
        key_id=key_id(key),
    )  # fmt: skip
    return sign_manifest(doc, key)


def test_rotation_flows_trust_through_endorsements() -> None:
    k1, k2, k3 = (Ed25519PrivateKey.generate() for _ in range(3))
    pinned = KeySet.of(k1)
    # A site offline for two rotations catches up in one document: k1 -> k2 -> k3.
    text, sig = sign_keyset([entry(k1), entry(k3, by=k2), entry(k2, by=k1)], k3, revision=3)
    trusted = accept_keyset(pinned, text, sig)
    assert set(trusted.ids()) == {key_id(k) for k in (k1, k2, k3)}
    assert trusted.revision == 3
    # Manifests signed before the rotation still verify, and so do new ones.
    for key in (k1, k3):
        assert verify_manifest(*manifest(key), trusted)["key_id"] == key_id(key)
    # The stored form round-trips.
    assert KeySet.from_dict(json.loads(json.dumps(trusted.to_dict()))) == trusted


def test_unendorsed_or_rolled_back_sets_are_refused() -> None:
    k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    attacker = Ed25519PrivateKey.generate()
    pinned = KeySet.of(k1)
    # An attacker's key, self-signed: not endorsed by anything the site trusts.
    text, sig = sign_keyset([entry(k1), entry(attacker)], attacker, revision=2)
    with pytest.raises(VerificationError, match="not endorsed"):
        accept_keyset(pinned, text, sig)
    # Endorsed by itself through a made-up chain: still nothing the site trusted.
    text, sig = sign_keyset([entry(attacker, by=attacker)], attacker, revision=2)
    with pytest.raises(VerificationError, match="not endorsed"):
        accept_keyset(pinned, text, sig)
    # A genuine document whose text was altered after signing.
    text, sig = sign_keyset([entry(k1), entry(k2, by=k1)], k2, revision=2)
    with pytest.raises(SignatureInvalid):
        accept_keyset(pinned, text.replace('"revision":2', '"revision":9'), sig)
    trusted = accept_keyset(pinned, text, sig)
    # The retirement of k1 at revision 3; replaying revision 2 afterwards brings nothing back.
    retire, retire_sig = sign_keyset([entry(k1, retired=True), entry(k2, by=k1)], k2, revision=3)
    after = accept_keyset(trusted, retire, retire_sig)
    assert after.ids() == [key_id(k2)]
    with pytest.raises(VerificationError, match="older"):
        accept_keyset(after, text, sig)
    # A manifest signed by the retired key no longer verifies.
    with pytest.raises(SignatureInvalid):
        verify_manifest(*manifest(k1), after)


def test_garbage_documents_are_refused() -> None:
    pinned = KeySet.of(Ed25519PrivateKey.generate())
    for text in ("", "[]", '{"schema": "x"}', '{"schema":"modelfleet.keyset/v1","revision":true}'):
        with pytest.raises(VerificationError):
            accept_keyset(pinned, text, "A" * 88)
    with pytest.raises(VerificationError):
        accept_keyset(pinned, "x" * 70_000, "A" * 88)
