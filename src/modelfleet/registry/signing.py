"""The hub's Ed25519 signing key and the public key sites pin at enrollment.

The private key never leaves the hub's data directory, so it is created with mode 0600 from
the first byte and never overwritten: replacing it would silently orphan every site that
pinned the old public key. The public key travels as base64 of its raw 32 bytes, short
enough to paste, and a key id (a sha256 prefix) names it in manifests and logs.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import logging
import os
import stat
import uuid
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from modelfleet.errors import Conflict, InvalidInput, NotFound, StoreError

__all__ = [
    "generate_signing_key",
    "key_id",
    "load_public_key",
    "load_signing_key",
    "public_key_text",
]

log = logging.getLogger(__name__)

_RAW = serialization.Encoding.Raw
_RAW_PUBLIC = serialization.PublicFormat.Raw


def generate_signing_key(path: Path) -> Ed25519PrivateKey:
    """Create a new key file (PEM, PKCS8, mode 0600); :class:`Conflict` if one exists."""
    path = Path(path)
    if path.exists():
        raise Conflict(f"signing key {path} already exists; refusing to overwrite it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _create_exclusive(path, pem)
    return key


def _create_exclusive(path: Path, data: bytes) -> None:
    """Write ``data`` to a 0600 temporary, then hard-link it into place.

    The link fails if ``path`` appeared meanwhile, so a concurrent ``hub init`` can never
    replace a key, and readers never see a partly written file.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        _write_fd(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), data)
        try:
            os.link(tmp, path)
        except FileExistsError as exc:
            raise Conflict(f"signing key {path} already exists; refusing to overwrite it") from exc
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            # No hard links on this filesystem: exclusive create keeps "never overwrite".
            _write_new(path, data)
    except OSError as exc:
        raise StoreError(f"cannot write signing key {path}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _write_new(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise Conflict(f"signing key {path} already exists; refusing to overwrite it") from exc
    _write_fd(fd, data)


def _write_fd(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Read the hub key; :class:`NotFound` if absent, :class:`InvalidInput` if unusable.

    A key readable by group or others is loaded with a warning rather than refused, since
    secret mounts (e.g. Kubernetes) commonly grant 0644 inside a private volume.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise NotFound(
            f"signing key {path} does not exist (run `modelfleet hub init` to create one)"
        ) from exc
    except OSError as exc:
        raise InvalidInput(f"cannot read signing key {path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("signing key %s is accessible to group/others (mode %o)", path, mode & 0o777)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise InvalidInput(
            f"signing key {path} is password-protected; modelfleet needs an unencrypted key"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(
            f"signing key {path} is not a valid PEM private key (corrupted or wrong file)"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(
            f"signing key {path} is a {type(key).__name__}, not an Ed25519 private key"
        )
    return key


def _public(key: Ed25519PublicKey | Ed25519PrivateKey) -> Ed25519PublicKey:
    return key.public_key() if isinstance(key, Ed25519PrivateKey) else key


def public_key_text(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """Base64 of the raw 32-byte public key (a private key gives its public half)."""
    raw = _public(key).public_bytes(_RAW, _RAW_PUBLIC)
    return base64.b64encode(raw).decode("ascii")


def load_public_key(text: str) -> Ed25519PublicKey:
    """Parse base64 raw bytes (as printed by the hub) or a PEM public key."""
    if not isinstance(text, str):
        raise InvalidInput("public key must be text")
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(stripped.encode("ascii"))
        except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError) as exc:
            raise InvalidInput("public key is not a valid PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidInput(f"public key is a {type(key).__name__}, not Ed25519")
        return key
    try:
        raw = base64.b64decode(stripped.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise InvalidInput("public key is not valid base64") from exc
    if len(raw) != 32:
        raise InvalidInput(f"public key must be 32 bytes of Ed25519, got {len(raw)} bytes")
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise InvalidInput(f"public key is not a valid Ed25519 key: {exc}") from exc


def key_id(public_key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """First 16 hex chars of sha256 over the raw public key: names the key, reveals nothing."""
    raw = _public(public_key).public_bytes(_RAW, _RAW_PUBLIC)
    return hashlib.sha256(raw).hexdigest()[:16]
