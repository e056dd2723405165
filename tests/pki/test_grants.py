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


def test_a_known_token_without_rights_here_is_refused_with_its_reason_for_every_endpoint() -> None:
    refused = grant(
        "viewer", models=(), sites=(), refusal="token 'viewer' has role viewer", expires_at=None
    )
    gone = grant("old-admin", models=(), refusal="role admin", expires_at=NOW - timedelta(days=1))
    grants = listed(grant("all"), refused, gone)
    for model in ("pump", None):  # None: /metrics, /v2, /healthz
        with pytest.raises(PermissionDenied, match="has role viewer"):
            grants.authorize("Bearer viewer", model, NOW)
        with pytest.raises(PermissionDenied, match="has role viewer"):
            grants.authorize_raw(b"Bearer viewer", model)
    with pytest.raises(PermissionDenied):  # refusals are never remembered as a match
        grants.authorize_raw(b"Bearer viewer", "pump")
    with pytest.raises(Unauthenticated, match="expired"):  # expiry is told first
        grants.authorize("Bearer old-admin", "pump", NOW)
    # The refusal is part of the signed document, and its size is bounded.
    text, sig = sign_grants("plant-a", [refused], HUB, issued_at=NOW)
    assert '"refusal":"token \'viewer\' has role viewer"' in text
    long = text.replace("has role viewer", "x" * 600)
    with pytest.raises(SignatureInvalid):
        GrantList.verify(long, sig, KEYS, holder="plant-a", newer_than=NOW)
    text, sig = sign_grants("plant-a", [grant("v", refusal="x" * 600)], HUB, issued_at=NOW)
    with pytest.raises(VerificationError, match="refusal"):
        GrantList.verify(text, sig, KEYS, holder="plant-a", newer_than=NOW)


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


def test_raw_headers_are_remembered_per_list_with_expiry_and_models_checked_each_time() -> None:
    short = grant("short", models=("pump",), expires_at=datetime.now(UTC) + timedelta(hours=1))
    grants = listed(grant("all"), short)
    assert grants.authorize_raw(b"Bearer all", "pump").name == "all"
    assert grants.authorize_raw(b"Bearer all", "fan").name == "all"  # remembered
    assert grants.authorize_raw(b"Bearer short", "pump").name == "short"
    with pytest.raises(PermissionDenied):
        grants.authorize_raw(b"Bearer short", "fan")  # remembered, scope still checked
    for header in (None, b"Bearer nope", b"Basic x"):
        with pytest.raises(Unauthenticated):
            grants.authorize_raw(header, "pump")
    # A newer list without the token (a revocation) knows nothing of the old one's memory.
    with pytest.raises(Unauthenticated):
        listed(short).authorize_raw(b"Bearer all", "pump")


def test_gateway_grants_carry_sites_and_old_documents_still_parse() -> None:
    scoped = grant("eu", sites=("eu-a",))
    text, sig = sign_grants("gateway", [scoped, grant("all")], HUB, issued_at=NOW)
    held = GrantList.verify(text, sig, KEYS, holder="gateway", newer_than=NOW)
    assert held.by_hash[hash_secret("eu")].sites == ("eu-a",)
    assert held.by_hash[hash_secret("all")].sites is None
    assert "sites" not in grant("all").to_dict()  # lists without site scopes are unchanged
