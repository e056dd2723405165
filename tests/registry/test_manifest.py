"""Signing keys and signed manifests: the good one passes, every tampering fails."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from modelfleet.errors import (
    Conflict,
    DigestMismatch,
    InvalidInput,
    NotFound,
    SignatureInvalid,
    VerificationError,
)
from modelfleet.registry.manifest import (
    SCHEMA,
    build_manifest,
    canonical_json,
    sha256_file,
    sign_manifest,
    verify_manifest,
)
from modelfleet.registry.signing import (
    generate_signing_key,
    key_id,
    load_public_key,
    load_signing_key,
    public_key_text,
)

BLOB = b"\x08\x08pretend this is an onnx model" * 10
IO = {
    "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "Y", "datatype": "FP32", "shape": [-1, 1]}],
}


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _manifest(key: Ed25519PrivateKey, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": "churn",
        "version": 3,
        "digest": hashlib.sha256(BLOB).hexdigest(),
        "size": len(BLOB),
        "io": IO,
        "opset": 17,
        "framework": "sklearn",
        "training_regions": ["eu-west", "eu-central", "eu-west"],
        "parent_version": 2,
        "created_at": datetime(2024, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2))),
        "key_id": key_id(key.public_key()),
        "metrics": {"accuracy": 0.97, "auc": 0.1 + 0.2},
    }
    fields.update(overrides)
    return build_manifest(**fields)


# --- signing keys ----------------------------------------------------------------------


def test_generate_and_load_signing_key(tmp_path: Path) -> None:
    path = tmp_path / "hub.pem"
    key = generate_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_signing_key(path)
    assert public_key_text(loaded) == public_key_text(key.public_key())
    assert [p.name for p in tmp_path.iterdir()] == ["hub.pem"]


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "hub.pem"
    generate_signing_key(path)
    before = path.read_bytes()
    with pytest.raises(Conflict):
        generate_signing_key(path)
    assert path.read_bytes() == before


def test_load_missing_key(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="hub init"):
        load_signing_key(tmp_path / "absent.pem")


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
)
def test_load_corrupt_key(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(content)
    with pytest.raises(InvalidInput, match="not a valid PEM private key"):
        load_signing_key(path)


def test_load_key_of_wrong_type(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    path = tmp_path / "ec.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(InvalidInput, match="not an Ed25519"):
        load_signing_key(path)


def test_public_key_text_round_trip(key: Ed25519PrivateKey) -> None:
    text = public_key_text(key.public_key())
    assert len(base64.b64decode(text)) == 32
    assert public_key_text(load_public_key(text)) == text
    assert public_key_text(load_public_key(f"  {text}\n")) == text
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public_key_text(load_public_key(pem.decode())) == text


def test_key_id(key: Ed25519PrivateKey) -> None:
    raw = base64.b64decode(public_key_text(key))
    assert key_id(key.public_key()) == hashlib.sha256(raw).hexdigest()[:16]
    assert key_id(Ed25519PrivateKey.generate().public_key()) != key_id(key.public_key())


@pytest.mark.parametrize(
    "text", ["", "not base64!", base64.b64encode(b"short").decode(), "é" * 44, "-----BEGIN x"]
)
def test_load_public_key_rejects_garbage(text: str) -> None:
    with pytest.raises(InvalidInput):
        load_public_key(text)


# --- canonical JSON --------------------------------------------------------------------


def test_canonical_json_form() -> None:
    text = canonical_json({"b": [1, 2.5, None, True], "a": {"z": "é", "y": 0.1}})
    assert text == '{"a":{"y":0.1,"z":"é"},"b":[1,2.5,null,true]}'


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), -float("inf"), {1: "x"}, b"bytes", {1, 2}, object()]
)
def test_canonical_json_rejects_non_json(bad: Any) -> None:
    with pytest.raises(InvalidInput):
        canonical_json({"value": bad})


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_canonical_json_is_a_fixed_point(value: Any) -> None:
    try:
        text = canonical_json(value)
    except InvalidInput:
        return  # lone surrogates cannot be UTF-8
    assert canonical_json(json.loads(text)) == text


# --- build -----------------------------------------------------------------------------


def test_build_manifest_shape(key: Ed25519PrivateKey) -> None:
    manifest = _manifest(key)
    assert manifest["schema"] == SCHEMA
    assert manifest["digest"] == f"sha256:{hashlib.sha256(BLOB).hexdigest()}"
    assert manifest["created_at"] == "2024-05-01T12:30:00Z"
    assert manifest["lineage"] == {"parent_version": 2}
    assert manifest["training_regions"] == ["eu-central", "eu-west"]
    assert manifest["metrics"] == {"accuracy": 0.97, "auc": 0.1 + 0.2}
    assert _manifest(key, metrics=None)["metrics"] == {}
    assert _manifest(key, digest=manifest["digest"]) == manifest


@pytest.mark.parametrize(
    "override",
    [
        {"version": 0},
        {"version": True},
        {"size": -1},
        {"digest": "sha256:xyz"},
        {"digest": "A" * 64},
        {"name": ""},
        {"opset": 0},
        {"parent_version": 0},
        {"created_at": datetime(2024, 1, 1)},
        {"metrics": {"loss": float("nan")}},
        {"io": {"inputs": []}},
        {"training_regions": "eu-west"},
    ],
)
def test_build_manifest_rejects_bad_fields(key: Ed25519PrivateKey, override: Any) -> None:
    with pytest.raises(InvalidInput):
        _manifest(key, **override)


def test_sign_refuses_a_manifest_naming_another_key(key: Ed25519PrivateKey) -> None:
    with pytest.raises(InvalidInput, match="being signed by"):
        sign_manifest(_manifest(key, key_id="0" * 16), key)


# --- verify ----------------------------------------------------------------------------


def test_good_manifest_verifies(key: Ed25519PrivateKey, tmp_path: Path) -> None:
    manifest = _manifest(key)
    text, signature = sign_manifest(manifest, key)
    blob_path = tmp_path / "model.onnx"
    blob_path.write_bytes(BLOB)
    assert verify_manifest(text, signature, key.public_key()) == manifest
    assert verify_manifest(text, signature, public_key_text(key), blob=BLOB) == manifest
    assert verify_manifest(text, signature, key.public_key(), blob=blob_path) == manifest


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every leaf of a manifest, so each field gets its own tampering test."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _paths(v, (*prefix, k))] or [prefix]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _paths(v, (*prefix, i))] or [prefix]
    return [prefix]


def _tampered(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return 1
    return [*value, "x"] if isinstance(value, list) else {**value, "x": 1}


_SAMPLE = _manifest(Ed25519PrivateKey.generate())


@pytest.mark.parametrize("field", _paths(_SAMPLE), ids=lambda p: ".".join(map(str, p)))
def test_any_changed_field_is_rejected(key: Ed25519PrivateKey, field: tuple[Any, ...]) -> None:
    manifest = _manifest(key)
    text, signature = sign_manifest(manifest, key)
    changed = copy.deepcopy(manifest)
    target = changed
    for part in field[:-1]:
        target = target[part]
    target[field[-1]] = _tampered(target[field[-1]])
    # Re-serialised canonically, as an attacker would, so only the signature can catch it.
    with pytest.raises(SignatureInvalid):
        verify_manifest(canonical_json(changed), signature, key.public_key())
    assert verify_manifest(text, signature, key.public_key()) == manifest


def test_flipped_blob_byte_is_rejected(key: Ed25519PrivateKey, tmp_path: Path) -> None:
    text, signature = sign_manifest(_manifest(key), key)
    flipped = bytearray(BLOB)
    flipped[len(flipped) // 2] ^= 0x01
    with pytest.raises(DigestMismatch, match="hashes to"):
        verify_manifest(text, signature, key.public_key(), blob=bytes(flipped))
    path = tmp_path / "flipped.onnx"
    path.write_bytes(bytes(flipped))
    with pytest.raises(DigestMismatch):
        verify_manifest(text, signature, key.public_key(), blob=path)


def test_blob_of_other_size_is_rejected(key: Ed25519PrivateKey) -> None:
    text, signature = sign_manifest(_manifest(key), key)
    with pytest.raises(DigestMismatch, match="bytes"):
        verify_manifest(text, signature, key.public_key(), blob=BLOB + b"\x00")


def test_signature_from_another_key_is_rejected(key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    manifest = _manifest(key, key_id=key_id(other.public_key()))
    text, signature = sign_manifest(manifest, other)
    with pytest.raises(SignatureInvalid):
        verify_manifest(text, signature, key.public_key())


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-4],
        lambda s: s[:20],
        lambda s: "",
        lambda s: "%%%not-base64%%%",
        lambda s: s.replace("=", "") + "!",
        lambda s: base64.b64encode(base64.b64decode(s)[:-1]).decode(),
        lambda s: base64.b64encode(bytes(64)).decode(),
    ],
    ids=["chopped", "truncated", "empty", "garbage", "bad-char", "63-bytes", "zeros"],
)
def test_broken_signature_is_rejected(key: Ed25519PrivateKey, mangle: Any) -> None:
    text, signature = sign_manifest(_manifest(key), key)
    with pytest.raises(SignatureInvalid):
        verify_manifest(text, mangle(signature), key.public_key())


@pytest.mark.parametrize(
    "reformat",
    [
        lambda m: json.dumps(m, indent=2, ensure_ascii=False),
        lambda m: json.dumps(m, sort_keys=True),
        lambda m: json.dumps(m, sort_keys=True, separators=(",", ":")) + "\n",
    ],
)
def test_non_canonical_text_is_rejected(key: Ed25519PrivateKey, reformat: Any) -> None:
    manifest = _manifest(key)
    _, signature = sign_manifest(manifest, key)
    with pytest.raises(SignatureInvalid):  # same meaning, other text
        verify_manifest(reformat(manifest), signature, key.public_key())
    # Even signed as-is, a non-canonical text is refused.
    text = reformat(manifest)
    own = base64.b64encode(key.sign(text.encode())).decode()
    with pytest.raises(VerificationError, match="canonical"):
        verify_manifest(text, own, key.public_key())


def test_duplicate_keys_are_not_canonical(key: Ed25519PrivateKey) -> None:
    text, _ = sign_manifest(_manifest(key), key)
    doubled = text[:-1] + ',"name":"other"}'
    signature = base64.b64encode(key.sign(doubled.encode())).decode()
    with pytest.raises(VerificationError, match="canonical"):
        verify_manifest(doubled, signature, key.public_key())


def test_other_schema_is_rejected(key: Ed25519PrivateKey) -> None:
    manifest = _manifest(key)
    manifest["schema"] = "modelfleet.manifest/v0"
    text, signature = sign_manifest(manifest, key)
    with pytest.raises(VerificationError, match="schema"):
        verify_manifest(text, signature, key.public_key())


def test_garbage_public_key_is_invalid_input(key: Ed25519PrivateKey) -> None:
    text, signature = sign_manifest(_manifest(key), key)
    with pytest.raises(InvalidInput):
        verify_manifest(text, signature, "garbage")


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = b"x" * ((1 << 20) + 3)
    path.write_bytes(data)
    assert sha256_file(path) == (hashlib.sha256(data).hexdigest(), len(data))
    with pytest.raises(NotFound):
        sha256_file(tmp_path / "missing")


def test_created_at_in_utc() -> None:
    key = Ed25519PrivateKey.generate()
    moment = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
    assert _manifest(key, created_at=moment)["created_at"] == "2024-05-01T12:00:00.250000Z"


def test_loose_key_permissions_warn_but_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "hub.pem"
    generate_signing_key(path)
    path.chmod(0o644)
    with caplog.at_level("WARNING", logger="modelfleet.registry.signing"):
        load_signing_key(path)
    assert "group/others" in caplog.text
