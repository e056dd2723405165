"""The hub's signing keys in its data directory: the current one signs, all of them verify.

Layout (``keys/`` in the data directory, mode 0700)::

    keys/<key id>.pem   one Ed25519 private key per key ever made (0600, never replaced)
    keys/keyset.json    the published set: every key's public half, who endorsed it,
                        whether it is retired, the set's revision and the current key

``hub key rotate`` makes a new key, has the current key endorse it, makes it current and
bumps the revision; ``hub key retire ID`` marks an old key retired (sites drop it when they
next hear from the hub). The set document sites receive is signed by the current key (see
:mod:`modelfleet.registry.keyset` for what a site checks). A data directory made before key
sets existed (one ``signing_key.pem``) is read as a set of that one key, untouched on disk
until the first rotation.

Replicas share the data directory (a mounted secret volume); :meth:`HubKeys.refresh` picks up
a rotation made by another replica from ``keyset.json``'s modification time.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modelfleet.errors import Conflict, InvalidInput, NotFound
from modelfleet.registry.keyset import KeyEntry, KeySet, endorse, sign_keyset
from modelfleet.registry.signing import (
    generate_signing_key,
    key_id,
    load_public_key,
    load_signing_key,
)

__all__ = ["HubKeys", "SignedKeySet"]

log = logging.getLogger("modelfleet.hub.keys")

LEGACY_KEY_FILE = "signing_key.pem"
KEYS_DIR = "keys"
KEYSET_FILE = "keyset.json"


@dataclass(frozen=True)
class SignedKeySet:
    """The set document sites receive, and its signature by the current key."""

    text: str
    signature: str
    revision: int
    current: str


class HubKeys:
    """Signing keys of one hub data directory (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._entries: list[KeyEntry] = []
        self._private: dict[str, Ed25519PrivateKey] = {}
        self._revision = 0
        self._current = ""
        self._signed: SignedKeySet | None = None
        self._load()

    @property
    def keys_dir(self) -> Path:
        return self.root / KEYS_DIR

    @property
    def keyset_path(self) -> Path:
        return self.keys_dir / KEYSET_FILE

    # --- creation ---------------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path) -> HubKeys:
        """The first key of a new data directory; :class:`Conflict` if keys exist."""
        root = Path(root)
        if (root / KEYS_DIR / KEYSET_FILE).exists() or (root / LEGACY_KEY_FILE).exists():
            raise Conflict(f"{root} already has signing keys; refusing to replace them")
        keys_dir = root / KEYS_DIR
        keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = keys_dir / f".new-{uuid.uuid4().hex}.pem"
        key = generate_signing_key(tmp)
        kid = key_id(key)
        os.replace(tmp, keys_dir / f"{kid}.pem")
        _write_keyset(
            keys_dir / KEYSET_FILE,
            revision=1,
            current=kid,
            entries=[KeyEntry(key.public_key(), datetime.now(UTC))],
        )
        return cls(root)

    # --- reading ----------------------------------------------------------------------------

    def _load(self) -> None:
        if not self.keyset_path.exists():
            legacy = self.root / LEGACY_KEY_FILE
            if not legacy.exists():
                raise NotFound(
                    f"no signing keys in {self.root} (run `modelfleet hub init` to create them)"
                )
            key = load_signing_key(legacy)
            self._entries = [KeyEntry(key.public_key(), datetime.now(UTC))]
            self._private = {key_id(key): key}
            self._revision, self._current = 1, key_id(key)
            self._signed = None
            return
        mtime = self.keyset_path.stat().st_mtime
        doc = _read_keyset(self.keyset_path)
        entries: list[KeyEntry] = []
        private: dict[str, Ed25519PrivateKey] = {}
        for raw in doc["keys"]:
            entry = KeyEntry(
                load_public_key(str(raw["public_key"])),
                datetime.fromisoformat(str(raw["created_at"]).replace("Z", "+00:00")),
                endorsed_by=raw.get("endorsed_by"),
                endorsement=raw.get("endorsement"),
                retired=bool(raw.get("retired", False)),
            )
            if entry.id != raw.get("id"):
                raise InvalidInput(f"{self.keyset_path}: key {raw.get('id')} does not match")
            entries.append(entry)
            path = self.keys_dir / f"{entry.id}.pem"
            if path.exists():
                private[entry.id] = load_signing_key(path)
        current = str(doc["current"])
        if current not in private:
            raise NotFound(f"the current signing key {current} is missing from {self.keys_dir}")
        self._entries, self._private = entries, private
        self._revision, self._current = int(doc["revision"]), current
        self._mtime, self._signed = mtime, None

    def refresh(self) -> bool:
        """Re-read the set if another process rotated it; True if it changed."""
        try:
            mtime = self.keyset_path.stat().st_mtime
        except FileNotFoundError:
            return False
        with self._lock:
            if mtime == self._mtime:
                return False
            self._load()
            log.info(
                "signing key set now at revision %d (current %s)", self._revision, self._current
            )
            return True

    @property
    def current(self) -> Ed25519PrivateKey:
        return self._private[self._current]

    @property
    def current_id(self) -> str:
        return self._current

    @property
    def revision(self) -> int:
        return self._revision

    def entries(self) -> list[KeyEntry]:
        return list(self._entries)

    def trusted(self) -> KeySet:
        """The keys that verify (every key not retired): what the hub itself checks with."""
        return KeySet({e.id: e.public_key for e in self._entries if not e.retired}, self._revision)

    def signed(self) -> SignedKeySet:
        """The set document for sites, signed by the current key (cached until it changes)."""
        with self._lock:
            if self._signed is None:
                text, signature = sign_keyset(self._entries, self.current, self._revision)
                self._signed = SignedKeySet(text, signature, self._revision, self._current)
            return self._signed

    # --- changes ----------------------------------------------------------------------------

    def rotate(self) -> KeyEntry:
        """A new current key, endorsed by the one it replaces."""
        with self._lock:
            self._migrate_legacy()
            tmp = self.keys_dir / f".new-{uuid.uuid4().hex}.pem"
            key = generate_signing_key(tmp)
            kid = key_id(key)
            os.replace(tmp, self.keys_dir / f"{kid}.pem")
            entry = KeyEntry(
                key.public_key(),
                datetime.now(UTC),
                endorsed_by=self._current,
                endorsement=endorse(self.current, key.public_key()),
            )
            entries = [*self._entries, entry]
            _write_keyset(
                self.keyset_path, revision=self._revision + 1, current=kid, entries=entries
            )
            self._load()
            return entry

    def retire(self, kid: str) -> KeyEntry:
        """Mark an old key retired; the current key cannot be (rotate first)."""
        with self._lock:
            found = next((e for e in self._entries if e.id == kid), None)
            if found is None:
                raise NotFound(
                    f"no signing key {kid!r} (keys: {', '.join(e.id for e in self._entries)})"
                )
            if kid == self._current:
                raise Conflict(
                    f"key {kid} is the current signing key; rotate first, then retire it"
                )
            if found.retired:
                return found
            self._migrate_legacy()
            entries = [replace(e, retired=True) if e.id == kid else e for e in self._entries]
            _write_keyset(
                self.keyset_path,
                revision=self._revision + 1,
                current=self._current,
                entries=entries,
            )
            self._load()
            return next(e for e in self._entries if e.id == kid)

    def _migrate_legacy(self) -> None:
        """Before the first change, a one-key directory moves to the keys/ layout."""
        if self.keyset_path.exists():
            return
        self.keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        legacy = self.root / LEGACY_KEY_FILE
        target = self.keys_dir / f"{self._current}.pem"
        if not target.exists():
            os.link(legacy, target)
        _write_keyset(
            self.keyset_path, revision=self._revision, current=self._current, entries=self._entries
        )


def _read_keyset(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise InvalidInput(f"{path} is not a key set file")
    return doc


def _write_keyset(path: Path, *, revision: int, current: str, entries: list[KeyEntry]) -> None:
    doc = {"revision": revision, "current": current, "keys": [e.to_dict() for e in entries]}
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
