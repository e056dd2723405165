"""Grant lists: signed per holder, checked offline, never rolled back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modelfleet.errors import PermissionDenied, SignatureInvalid, Unauthenticated, VerificationError
from modelfleet.grants import Grant, GrantList, hash_secret, sign_grants
from modelfleet.registry.keyset import KeySet

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
HUB = Ed25519PrivateKey.generate()
KEYS = KeySet.of(HUB)


def grant(secret: str, **kw: object) -> Grant:
    return Grant(token_id=f"t-{secret}", name=secret, token_hash=hash_secret(secret), **kw)


def listed(*grants: Grant, holder: str = "plant-a", at: datetime = NOW) -> GrantList:
    text, sig = sign_grants(holder, grants, HUB, issued_at=at)
    return GrantList.verify(text, sig, KEYS, holder="plant-a", newer_than=NOW - timedelta(hours=1))


def test_authorize_by_model_and_expiry() -> None:
    grants = listed(
        grant("all"),
        grant("pumps-only", models=("pump",)),
        grant("short", expires_at=NOW + timedelta(minutes=5)),
    )
    assert grants.authorize("Bearer all", "anything", NOW).name == "all"
    assert grants.authorize("bearer pumps-only", "pump", NOW).name == "pumps-only"
    assert grants.authorize("Bearer pumps-only", None, NOW).name == "pumps-only"  # /metrics
    with pytest.raises(PermissionDenied, match="may not call model 'fan'"):
        grants.authorize("Bearer pumps-only", "fan", NOW)
    with pytest.raises(Unauthenticated, match="expired"):
        grants.authorize("Bearer short", "pump", NOW + timedelta(minutes=6))
    for header in (None, "", "Bearer", "Basic abc", "Bearer unknown"):
        with pytest.raises(Unauthenticated):
            grants.authorize(header, "pump", NOW)
    with pytest.raises(Unauthenticated):
        GrantList.empty("plant-a").authorize("Bearer all", "pump", NOW)


def test_lists_are_bound_to_their_holder_signer_and_time() -> None:
    with pytest.raises(VerificationError, match="not for 'plant-a'"):
        listed(grant("all"), holder="plant-b")
    text, sig = sign_grants("plant-a", [grant("all")], Ed25519PrivateKey.generate(), issued_at=NOW)
    with pytest.raises(SignatureInvalid):
        GrantList.verify(text, sig, KEYS, holder="plant-a", newer_than=NOW)
    text, sig = sign_grants("plant-a", [grant("all")], HUB, issued_at=NOW)
    with pytest.raises(VerificationError, match="older"):
        GrantList.verify(text, sig, KEYS, holder="plant-a", newer_than=NOW + timedelta(seconds=1))
    tampered = text.replace(hash_secret("all"), hash_secret("mine"))
    with pytest.raises(SignatureInvalid):
        GrantList.verify(tampered, sig, KEYS, holder="plant-a", newer_than=NOW)
