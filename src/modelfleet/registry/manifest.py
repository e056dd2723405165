"""Signed manifests: the canonical JSON that binds a version's name, bytes and lineage.

The signature covers the exact UTF-8 text, and verification also demands that the text be
canonical (re-serialising it gives the same string). Without that second check a signer's
bug or a second encoder could produce two texts for one meaning, and "the same manifest"
would stop being a byte comparison, which is what caches and audits rely on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from modelfleet.errors import (
    DigestMismatch,
    InvalidInput,
    NotFound,
    SignatureInvalid,
    StoreError,
    VerificationError,
)
from modelfleet.registry.keyset import KeySet
from modelfleet.registry.signing import key_id as compute_key_id
from modelfleet.registry.signing import load_public_key

__all__ = [
    "SCHEMA",
    "build_manifest",
    "canonical_json",
    "sha256_file",
    "sign_manifest",
    "verify_manifest",
]

SCHEMA = "modelfleet.manifest/v1"
_HASH_CHUNK = 1 << 20
_SIGNATURE_BYTES = 64


def _check_json_value(value: Any, where: str) -> None:
    """Refuse values whose JSON form would not survive a round trip unchanged."""
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{where}: {value} cannot be represented in canonical JSON")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json_value(item, f"{where}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{where}: object key {key!r} is not a string")
            _check_json_value(item, f"{where}.{key}")
        return
    raise InvalidInput(f"{where}: {type(value).__name__} is not a JSON value")


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, raw UTF-8 characters, shortest round-trip floats."""
    _check_json_value(obj, "$")
    text = json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"manifest text is not encodable as UTF-8: {exc}") from exc
    return text


def _utc_text(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidInput("created_at must be timezone-aware (a naive time is ambiguous)")
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def _hex_digest(digest: str) -> str:
    hexpart = digest.removeprefix("sha256:")
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise InvalidInput(f"digest {digest!r} is not a lowercase hex sha256")
    return hexpart


def _positive_int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def build_manifest(
    *,
    name: str,
    version: int,
    digest: str,
    size: int,
    io: Mapping[str, Any],
    opset: int,
    framework: str | None,
    training_regions: list[str],
    parent_version: int | None,
    created_at: datetime,
    key_id: str,
    metrics: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The manifest of one version; training regions are sorted and de-duplicated.

    ``digest`` may be bare hex or ``sha256:<hex>``; it is always written prefixed so the
    algorithm is explicit in the signed text.
    """
    if not isinstance(name, str) or not name:
        raise InvalidInput("manifest name must be a non-empty string")
    if parent_version is not None:
        _positive_int(parent_version, "parent_version", 1)
    if not isinstance(io, Mapping) or not {"inputs", "outputs"} <= set(io):
        raise InvalidInput("io must be a mapping with 'inputs' and 'outputs'")
    if not isinstance(training_regions, list | tuple) or not all(
        isinstance(region, str) for region in training_regions
    ):
        raise InvalidInput("training_regions must be a list of strings")
    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "name": name,
        "version": _positive_int(version, "version", 1),
        "digest": f"sha256:{_hex_digest(digest)}",
        "size": _positive_int(size, "size", 0),
        "io": dict(io),
        "opset": _positive_int(opset, "opset", 1),
        "framework": framework,
        "training_regions": sorted(set(training_regions)),
        "lineage": {"parent_version": parent_version},
        "created_at": _utc_text(created_at),
        "key_id": key_id,
        "metrics": dict(metrics or {}),
    }
    canonical_json(manifest)
    return manifest


def sign_manifest(manifest: Mapping[str, Any], key: Ed25519PrivateKey) -> tuple[str, str]:
    """Canonical text and base64 Ed25519 signature over its UTF-8 bytes.

    Refuses a manifest naming another key id, which would send verifiers to the wrong key.
    """
    expected = compute_key_id(key)
    stated = manifest.get("key_id")
    if stated is not None and stated != expected:
        raise InvalidInput(f"manifest names key {stated!r} but is being signed by {expected!r}")
    text = canonical_json(manifest)
    signature = key.sign(text.encode("utf-8"))
    return text, base64.b64encode(signature).decode("ascii")


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not allowed in a manifest")


def verify_manifest(
    manifest_text: str,
    signature: str,
    public_key: Ed25519PublicKey | str | KeySet,
    *,
    blob: Path | bytes | None = None,
) -> dict[str, Any]:
    """The parsed manifest, only if every check passes; raises a VerificationError otherwise.

    ``public_key`` is one key or the set of keys the verifier trusts (any of them may have
    signed it: versions signed before a key rotation keep verifying).

    Order: signature over the exact text, canonical form, schema, key id, then the blob's
    size and sha256 when given. The signature comes first so untrusted text is not
    interpreted before it is authenticated.
    """
    if isinstance(public_key, KeySet):
        signer = public_key.verify(manifest_text, signature)
    else:
        key = load_public_key(public_key) if isinstance(public_key, str) else public_key
        raw_signature = _decode_signature(signature)
        try:
            key.verify(raw_signature, manifest_text.encode("utf-8"))
        except (InvalidSignature, UnicodeEncodeError) as exc:
            raise SignatureInvalid(
                f"manifest signature does not verify against key {compute_key_id(key)}"
            ) from exc
        signer = compute_key_id(key)
    try:
        parsed = json.loads(manifest_text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise VerificationError(f"signed manifest is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise VerificationError("signed manifest is not a JSON object")
    try:
        canonical = canonical_json(parsed)
    except InvalidInput as exc:
        raise VerificationError(f"signed manifest is not canonical: {exc.message}") from exc
    if canonical != manifest_text:
        raise VerificationError("signed manifest is not in canonical form; refusing it")
    if parsed.get("schema") != SCHEMA:
        raise VerificationError(
            f"unsupported manifest schema {parsed.get('schema')!r} (expected {SCHEMA!r})"
        )
    stated = parsed.get("key_id")
    if stated is not None and stated != signer:
        raise VerificationError(f"manifest names key {stated!r} but was signed by another key")
    if blob is not None:
        _verify_blob(parsed, blob)
    return parsed


def _decode_signature(signature: str) -> bytes:
    try:
        raw = base64.b64decode(signature.strip().encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError, AttributeError) as exc:
        raise SignatureInvalid("manifest signature is not valid base64") from exc
    if len(raw) != _SIGNATURE_BYTES:
        raise SignatureInvalid(
            f"manifest signature has {len(raw)} bytes; Ed25519 signatures have {_SIGNATURE_BYTES}"
        )
    return raw


def _verify_blob(manifest: Mapping[str, Any], blob: Path | bytes) -> None:
    stated_digest = manifest.get("digest")
    stated_size = manifest.get("size")
    if not isinstance(stated_digest, str) or not stated_digest.startswith("sha256:"):
        raise VerificationError(f"manifest digest {stated_digest!r} is not 'sha256:<hex>'")
    if isinstance(blob, bytes | bytearray | memoryview):
        data = bytes(blob)
        actual, size = hashlib.sha256(data).hexdigest(), len(data)
    else:
        actual, size = sha256_file(Path(blob))
    if size != stated_size:
        raise DigestMismatch(f"artifact has {size} bytes; the manifest promises {stated_size}")
    if f"sha256:{actual}" != stated_digest:
        raise DigestMismatch(
            f"artifact hashes to sha256:{actual}; the manifest promises {stated_digest}"
        )


def sha256_file(path: Path) -> tuple[str, int]:
    """Hex sha256 and size of a file, streamed so large models never sit in memory."""
    hasher = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                hasher.update(chunk)
                size += len(chunk)
    except FileNotFoundError as exc:
        raise NotFound(f"no such file: {path}") from exc
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    return hasher.hexdigest(), size
