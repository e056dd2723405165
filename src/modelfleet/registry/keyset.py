"""Signing key sets: the hub's keys rotate without re-enrolling a single site.

A site pins the hub's key set at enrollment. When an operator runs ``hub key rotate``, the
hub makes a new key, *endorses* it with the key that was current (a signature over the new
key's id and public bytes), and publishes the new set document, signed by the new current
key and numbered one higher. A site accepts a set document only if

- its revision is not lower than the one it holds (an old document replayed by the network
  cannot bring back a key the operator retired), and
- every key it newly trusts is endorsed by a key it already trusted, directly or through a
  chain of endorsements within the document, and the document is signed by its current key.

So the trust a site places in the key it pinned flows, one endorsement at a time, to every
later key, and nothing else can enter. Retiring a key (after a leak, or once no version is
signed by it any more) removes it from every site that sees the next document. Manifests
signed by any trusted key keep verifying, so versions signed before a rotation stay valid
until their versions are re-signed or the key is retired.

Documents are canonical JSON (as manifests are: :func:`~.manifest.canonical_json`); a
signature is base64 Ed25519 over the exact UTF-8 text.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from modelfleet.errors import SignatureInvalid, VerificationError
from modelfleet.registry.signing import key_id, load_public_key, public_key_text

__all__ = [
    "KEYSET_SCHEMA",
    "KeyEntry",
    "KeySet",
    "accept_keyset",
    "endorse",
    "parse_signed_time",
    "sign_keyset",
    "sign_text",
    "signed_time",
]

KEYSET_SCHEMA = "modelfleet.keyset/v1"
_ENDORSEMENT = "modelfleet.key-endorsement/v1"
_SIGNATURE_BYTES = 64
#: Keys one set may hold: rotations are rare; a document with thousands is an attack.
MAX_KEYS = 64


def signed_time(moment: datetime) -> str:
    """How a time is spelled inside a signed document (UTC, microseconds, ``Z``): one
    spelling, so the bytes signed and the bytes checked agree."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_signed_time(text: Any) -> datetime:
    """The time :func:`signed_time` wrote; ``ValueError`` for anything else."""
    if not isinstance(text, str):
        raise ValueError("time must be text")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sign_text(text: str, key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.sign(text.encode("utf-8"))).decode("ascii")


def _signature_bytes(signature: str) -> bytes:
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError, AttributeError) as exc:
        raise SignatureInvalid("signature is not valid base64") from exc
    if len(raw) != _SIGNATURE_BYTES:
        raise SignatureInvalid(f"signature must be {_SIGNATURE_BYTES} bytes, got {len(raw)}")
    return raw


def _verifies(key: Ed25519PublicKey, text: str, raw_signature: bytes) -> bool:
    try:
        key.verify(raw_signature, text.encode("utf-8"))
    except (InvalidSignature, UnicodeEncodeError):
        return False
    return True


@dataclass(frozen=True)
class KeySet:
    """The hub keys a verifier trusts, by id, and the set revision they came from."""

    keys: Mapping[str, Ed25519PublicKey]
    revision: int = 0

    @classmethod
    def of(cls, *keys: Ed25519PublicKey | Ed25519PrivateKey, revision: int = 0) -> KeySet:
        publics = [k.public_key() if isinstance(k, Ed25519PrivateKey) else k for k in keys]
        return cls({key_id(k): k for k in publics}, revision)

    def ids(self) -> list[str]:
        return sorted(self.keys)

    def verify(self, text: str, signature: str) -> str:
        """The id of the trusted key whose signature over ``text`` this is; raises
        :class:`SignatureInvalid` if none of them signed it. Every key is tried (a set
        holds a handful), so nothing in the untrusted text is read before it verifies."""
        raw = _signature_bytes(signature)
        for kid, key in self.keys.items():
            if _verifies(key, text, raw):
                return kid
        raise SignatureInvalid(
            f"signature does not verify against any trusted hub key ({', '.join(self.ids())})"
        )

    def to_dict(self) -> dict[str, Any]:
        """What a site stores: revision and the trusted public keys."""
        return {
            "revision": self.revision,
            "keys": {kid: public_key_text(k) for kid, k in sorted(self.keys.items())},
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> KeySet:
        keys = {str(kid): load_public_key(str(text)) for kid, text in doc["keys"].items()}
        for kid, key in keys.items():
            if key_id(key) != kid:
                raise VerificationError(f"stored key {kid} does not match its id")
        return cls(keys, int(doc.get("revision", 0)))


@dataclass(frozen=True)
class KeyEntry:
    """One key of the hub's set as published: who endorsed it, whether it is retired."""

    public_key: Ed25519PublicKey
    created_at: datetime
    endorsed_by: str | None = None  # the key id that endorsed it; None for the first key
    endorsement: str | None = None
    retired: bool = False
    id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", key_id(self.public_key))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "public_key": public_key_text(self.public_key),
            "created_at": self.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "endorsed_by": self.endorsed_by,
            "endorsement": self.endorsement,
            "retired": self.retired,
        }


def _endorsement_text(new_key: Ed25519PublicKey) -> str:
    return _canonical(
        {"purpose": _ENDORSEMENT, "id": key_id(new_key), "public_key": public_key_text(new_key)}
    )


def endorse(endorser: Ed25519PrivateKey, new_key: Ed25519PublicKey) -> str:
    """The endorser's signature admitting ``new_key`` to the set."""
    return sign_text(_endorsement_text(new_key), endorser)


def sign_keyset(
    entries: Iterable[KeyEntry], current: Ed25519PrivateKey, revision: int
) -> tuple[str, str]:
    """The set document (canonical text) and its signature by the current key."""
    listed = [e.to_dict() for e in entries]
    current_id = key_id(current)
    if current_id not in {e["id"] for e in listed}:
        raise VerificationError(f"the current key {current_id} is not in the set")
    doc = {"schema": KEYSET_SCHEMA, "revision": revision, "current": current_id, "keys": listed}
    text = _canonical(doc)
    return text, sign_text(text, current)


def accept_keyset(trusted: KeySet, text: str, signature: str) -> KeySet:
    """The key set a verifier trusts after reading this document (see the module docstring).

    Raises :class:`VerificationError` (and the verifier keeps ``trusted``) on a document
    that is malformed, older than ``trusted``, brings an unendorsed key, or is not signed by
    its current key.
    """
    if len(text) > 64 * 1024:
        raise VerificationError("key set document too large")
    raw_signature = _signature_bytes(signature)
    try:
        doc = json.loads(text)
        revision = doc["revision"]
        current = doc["current"]
        entries = doc["keys"]
        if (
            doc.get("schema") != KEYSET_SCHEMA
            or not isinstance(revision, int)
            or isinstance(revision, bool)
            or not isinstance(current, str)
            or not isinstance(entries, list)
            or len(entries) > MAX_KEYS
        ):
            raise ValueError("not a key set document")
        parsed = [
            (str(e["id"]), load_public_key(str(e["public_key"])), e.get("endorsed_by"), e)
            for e in entries
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VerificationError(f"malformed key set document: {exc}") from exc
    if revision < trusted.revision:
        raise VerificationError(
            f"key set revision {revision} is older than the one this site holds "
            f"({trusted.revision}); refusing a rollback"
        )
    known: dict[str, Ed25519PublicKey] = dict(trusted.keys)
    progress = True
    while progress:  # endorsements may chain in any order within the document
        progress = False
        for kid, key, endorser, entry in parsed:
            if kid in known or key_id(key) != kid:
                continue
            endorsement = entry.get("endorsement")
            if not isinstance(endorser, str) or not isinstance(endorsement, str):
                continue
            signer = known.get(endorser)
            if signer is not None and _verifies(
                signer, _endorsement_text(key), _signature_bytes(endorsement)
            ):
                known[kid] = key
                progress = True
    listed = {kid for kid, *_ in parsed}
    if current not in known or current not in listed:
        raise VerificationError(
            f"key set document's current key {current} is not endorsed by a trusted key"
        )
    if not _verifies(known[current], text, raw_signature):
        raise SignatureInvalid("key set document is not signed by its current key")
    retired = {kid for kid, _, _, entry in parsed if entry.get("retired") is True}
    if current in retired:
        raise VerificationError("key set document's current key is retired")
    # Trust what the document lists and has endorsed, minus what it retires; a pinned key
    # it no longer lists stays trusted until a document retires it explicitly.
    keep = {kid: key for kid, key in known.items() if kid not in retired}
    return KeySet(keep, revision)
