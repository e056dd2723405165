"""Inference grants: which bearer tokens may call which models, checked offline.

A site (and a gateway) must keep authorising requests while the hub is away, so it cannot
ask the hub about each token. Instead the hub signs a *grant list* for each holder: the
hashes of the ``infer`` tokens valid there, each with the models it may call (all, or a
list) and its expiry, and the hashes of the other tokens it knows with the reason they may
not call anything here (so that they get a 403 naming it, not a 401). The holder caches
the last list it verified (signature by a trusted hub key, bound to its own name, not
older than the one it holds) and checks every request against it in memory. A revoked or
expired token stops working at a site when the site next hears from the hub (its desired-
state long-poll: well under a second while connected) or, for expiry, at once; a site cut
off from the hub keeps the last list it had, by design.

Only hashes travel: a stolen grant list lets nobody call a model.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modelfleet.errors import PermissionDenied, Unauthenticated, VerificationError
from modelfleet.registry.keyset import KeySet, parse_signed_time, sign_text, signed_time

__all__ = ["GRANTS_SCHEMA", "Grant", "GrantList", "clock_offset", "hash_secret", "sign_grants"]

GRANTS_SCHEMA = "modelfleet.grants/v1"
#: Grants one list may carry, and its largest size: bounds what a holder parses.
MAX_GRANTS = 10_000
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024


def hash_secret(secret: str) -> str:
    """How tokens are stored and listed: sha256 of the secret (256-bit random, no KDF)."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Grant:
    """One token's right to call models here."""

    token_id: str
    name: str
    token_hash: str
    models: tuple[str, ...] | None = None  # None: every model
    expires_at: datetime | None = None
    #: In a gateway's list: the sites the token's site selector matched when the hub signed
    #: it (None: any site). A site's own list carries only the tokens valid there.
    sites: tuple[str, ...] | None = None
    #: Set for a token the hub knows but that has no rights here (another role, or an infer
    #: token whose scope leaves this holder out): the 403's message. Without these entries
    #: a holder could not tell such a token from a made-up one, and would answer 401.
    refusal: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "token_id": self.token_id,
            "name": self.name,
            "hash": self.token_hash,
            "models": list(self.models) if self.models is not None else None,
            "expires_at": signed_time(self.expires_at) if self.expires_at else None,
        }
        if self.sites is not None:  # absent otherwise: earlier documents stay as they were
            doc["sites"] = list(self.sites)
        if self.refusal is not None:
            doc["refusal"] = self.refusal
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Grant:
        models = doc.get("models")
        if models is not None and not (
            isinstance(models, list) and all(isinstance(m, str) for m in models)
        ):
            raise ValueError("models must be a list of names")
        sites = doc.get("sites")
        if sites is not None and not (
            isinstance(sites, list) and all(isinstance(m, str) for m in sites)
        ):
            raise ValueError("sites must be a list of names")
        token_hash = doc["hash"]
        if not isinstance(token_hash, str) or len(token_hash) != 64:
            raise ValueError("hash must be 64 hex characters")
        refusal = doc.get("refusal")
        if refusal is not None and not (isinstance(refusal, str) and len(refusal) <= 500):
            raise ValueError("refusal must be a string of at most 500 characters")
        expires = doc.get("expires_at")
        return cls(
            token_id=str(doc["token_id"]),
            name=str(doc["name"]),
            token_hash=token_hash,
            models=tuple(models) if models is not None else None,
            expires_at=parse_signed_time(expires) if expires is not None else None,
            sites=tuple(sites) if sites is not None else None,
            refusal=refusal,
        )


def sign_grants(
    holder: str,
    grants: Iterable[Grant],
    key: Ed25519PrivateKey,
    *,
    issued_at: datetime,
) -> tuple[str, str]:
    """The grant list for ``holder`` (a site or gateway name) and its signature."""
    doc = {
        "schema": GRANTS_SCHEMA,
        "holder": holder,
        "issued_at": signed_time(issued_at),
        "grants": [g.to_dict() for g in sorted(grants, key=lambda g: g.token_id)],
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return text, sign_text(text, key)


@dataclass(frozen=True)
class GrantList:
    """A verified grant list, indexed by token hash."""

    holder: str
    issued_at: datetime
    by_hash: Mapping[str, Grant]
    #: The hub's clock minus this holder's, estimated when the list arrived (see
    #: :func:`clock_offset`): token expiry is judged on the hub's clock, not the holder's.
    clock_offset: timedelta = timedelta(0)
    #: Raw ``Authorization`` values already matched to a grant (see :meth:`authorize_raw`).
    _matched: dict[bytes, Grant] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def empty(cls, holder: str) -> GrantList:
        """Before any list arrived: nobody may call anything."""
        return cls(holder, datetime.min.replace(tzinfo=UTC), {})

    @classmethod
    def verify(
        cls,
        text: str,
        signature: str,
        keys: KeySet,
        *,
        holder: str,
        newer_than: datetime,
        received_at: datetime | None = None,
    ) -> GrantList:
        """The list in ``text`` if a trusted key signed it, it is ``holder``'s, and it was
        issued at or after ``newer_than`` (a replayed older list could revive a revoked
        token); :class:`VerificationError` otherwise. ``received_at``: the holder's clock
        when the list came fresh from the hub (signed when served), from which the two
        clocks' offset is estimated; None for a list read back from disk (no offset)."""
        if len(text) > MAX_DOCUMENT_BYTES:
            raise VerificationError("grant list too large")
        keys.verify(text, signature)
        try:
            doc = json.loads(text)
            if doc.get("schema") != GRANTS_SCHEMA:
                raise ValueError("not a grant list")
            raw = doc["grants"]
            if not isinstance(raw, list) or len(raw) > MAX_GRANTS:
                raise ValueError(f"grants must be a list of at most {MAX_GRANTS}")
            grants = [Grant.from_dict(g) for g in raw]
            issued_at = parse_signed_time(doc["issued_at"])
            stated_holder = doc["holder"]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise VerificationError(f"malformed grant list: {exc}") from exc
        if stated_holder != holder:
            raise VerificationError(
                f"grant list is for {stated_holder!r}, not for {holder!r}; refusing it"
            )
        if issued_at < newer_than:
            raise VerificationError("grant list is older than the one held; refusing it")
        offset = clock_offset(issued_at, received_at) if received_at else timedelta(0)
        return cls(holder, issued_at, {g.token_hash: g for g in grants}, offset)

    def authorize(
        self, authorization: str | None, model: str | None, now: datetime | None = None
    ) -> Grant:
        """The grant behind an ``Authorization: Bearer`` header, for ``model`` (None: an
        endpoint that names no model, such as ``/metrics``); 401 for a missing, unknown or
        expired token, 403 for a model the token may not call or a token with no rights
        here. ``now`` (default: the clock,
        read only for a token that expires) decides expiry."""
        if not authorization:
            raise Unauthenticated("missing bearer token (an infer token from the hub)")
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        wanted = hash_secret(secret.strip())
        grant = self.by_hash.get(wanted)
        # The dict lookup is by hash of a 256-bit secret; compare_digest keeps the final
        # equality check constant-time as well.
        if grant is None or not hmac.compare_digest(grant.token_hash, wanted):
            raise Unauthenticated(f"token not valid at {self.holder}")
        return _check(grant, model, now, self.clock_offset)

    def authorize_raw(self, authorization: bytes | None, model: str | None) -> Grant:
        """:meth:`authorize` for a header as the server hands it over (bytes), on the hot
        path: a header seen before is found with one dictionary lookup (no decoding, no
        sha256); expiry and the model are checked every time. The memory lives and dies
        with this list, so a new list (a revocation) forgets it."""
        grant = self._matched.get(authorization) if authorization is not None else None
        if grant is None:
            text = authorization.decode("latin-1") if authorization is not None else None
            grant = self.authorize(text, model)
            if authorization is not None:
                if len(self._matched) >= MAX_GRANTS:
                    self._matched.clear()
                self._matched[authorization] = grant
            return grant
        return _check(grant, model, None, self.clock_offset)


#: Offsets up to this are treated as none: the estimate includes the list's transit time.
CLOCK_OFFSET_TOLERANCE = timedelta(seconds=2)


def clock_offset(issued_at: datetime, received_at: datetime) -> timedelta:
    """The hub's clock minus the holder's, from a list the hub signed when it served it.

    The estimate is late by the list's transit time (under a second while connected), so a
    token may work that much past its expiry at a holder whose clock is off; small offsets
    (:data:`CLOCK_OFFSET_TOLERANCE`) are ignored, so a holder on NTP uses its own clock."""
    offset = issued_at - received_at
    return offset if abs(offset) > CLOCK_OFFSET_TOLERANCE else timedelta(0)


def _check(
    grant: Grant, model: str | None, now: datetime | None, offset: timedelta = timedelta(0)
) -> Grant:
    """A known token's expiry (on the hub's clock: the holder's plus ``offset``), then its
    rights here (all of them for a refusal entry)."""
    if grant.expires_at is not None and grant.expires_at <= (now or datetime.now(UTC)) + offset:
        raise Unauthenticated(f"token {grant.name!r} has expired")
    if grant.refusal is not None:
        raise PermissionDenied(grant.refusal)
    if model is not None and grant.models is not None and model not in grant.models:
        raise PermissionDenied(f"token {grant.name!r} may not call model {model!r}")
    return grant
