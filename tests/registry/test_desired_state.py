"""Signed desired states: bound to a site, never older, expiring; downgrades only if marked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modelfleet.errors import SignatureInvalid, VerificationError
from modelfleet.registry.desired_state import (
    DesiredModel,
    DesiredState,
    downgrade_refusal,
    sign_desired_state,
    verify_desired_state,
)
from modelfleet.registry.keyset import KeySet, sign_text

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
HUB = Ed25519PrivateKey.generate()
KEYS = KeySet.of(HUB)


def state(revision: int = 5, site: str = "plant-a", **kw: object) -> DesiredState:
    fields: dict[str, object] = {
        "site": site,
        "revision": revision,
        "issued_at": NOW,
        "expires_at": NOW + timedelta(days=7),
        "models": (DesiredModel("pump", 2, "pump@production", "{}", "sig", {"x": 1}),),
        **kw,
    }
    return DesiredState(**fields)


def verify(text: str, sig: str, *, applied: int = 4, now: datetime = NOW) -> DesiredState:
    return verify_desired_state(text, sig, KEYS, site="plant-a", applied_revision=applied, now=now)


def test_round_trip_and_binding() -> None:
    text, sig = sign_desired_state(state(), HUB)
    got = verify(text, sig)
    assert got == state()
    assert verify(text, sig, applied=5).revision == 5  # the same state again: fine
    with pytest.raises(VerificationError, match="older than the applied 6"):
        verify(text, sig, applied=6)
    with pytest.raises(VerificationError, match="expired"):
        verify(text, sig, now=NOW + timedelta(days=8))
    # The state already applied stays valid however old: a site cut off for longer than
    # the lifetime still restarts on it.
    assert verify(text, sig, applied=5, now=NOW + timedelta(days=80)).revision == 5
    other = sign_desired_state(state(site="plant-b"), HUB)
    with pytest.raises(VerificationError, match="not 'plant-a'"):
        verify(*other)
    with pytest.raises(SignatureInvalid):
        verify(text.replace('"version":2', '"version":1'), sig)
    forged = sign_desired_state(state(), Ed25519PrivateKey.generate())
    with pytest.raises(SignatureInvalid):
        verify(*forged)


def test_malformed_documents() -> None:
    for bad in (
        {"models": tuple(DesiredModel("m", 1, "m", "{}", "s") for _ in range(2))},
        {"revision": -1},
    ):
        text, sig = sign_desired_state(state(**bad), HUB)
        with pytest.raises(VerificationError):
            verify(text, sig, applied=0)


def test_params_that_are_not_an_object_refuse_the_document() -> None:
    text, _ = sign_desired_state(state(), HUB)
    bad = text.replace('"params":{"x":1}', '"params":["intra_op_threads",4]')
    assert bad != text
    with pytest.raises(VerificationError, match="params must be an object"):
        verify(bad, sign_text(bad, HUB))


def test_downgrades_need_the_hubs_mark() -> None:
    older = DesiredModel("pump", 1, "pump:1", "{}", "s")
    assert "refusing the downgrade" in (downgrade_refusal(older, {"pump": 2}) or "")
    marked = DesiredModel("pump", 1, "pump:1", "{}", "s", downgrade=True)
    assert downgrade_refusal(marked, {"pump": 2}) is None
    assert downgrade_refusal(older, {}) is None
    assert downgrade_refusal(older, {"pump": 1}) is None
