"""Who may call the gateway: the infer tokens of the grant list the hub signs for it.

The gateway authenticates its callers as a site does (:mod:`modelfleet.grants`: 401 without
or with an unknown or expired token, 403 for a model outside the token's scope; the health
probes stay open) and then calls sites with its *own* infer token. A caller's token limited
to a site selector reaches only the sites the hub resolved it to (``Grant.sites``).

The list comes from ``GET /api/v1/grants/gateway`` (the gateway's own token must be an
unscoped infer token), is refreshed every :data:`REFRESH_S` with the directory, and is kept
on disk beside the directory cache, so a gateway restarted while the hub is down keeps
authorising. Its signature is checked against the hub's signing key set: trusted on first
contact over the (verified, with TLS) hub connection, then rotated only as a site rotates
it (a new key endorsed by a trusted one, no older revision).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from modelfleet.errors import (
    ModelfleetError,
    PermissionDenied,
    Unauthenticated,
    VerificationError,
)
from modelfleet.grants import Grant, GrantList
from modelfleet.pki.tls import PEER_EXTENSION, Peer
from modelfleet.registry.keyset import KeySet, accept_keyset
from modelfleet.registry.signing import load_public_key
from modelfleet.transport.session import HubSession

__all__ = ["GRANTS_PATH", "HOLDER", "REFRESH_S", "GatewayAccess"]

log = logging.getLogger("modelfleet.gateway")

GRANTS_PATH = "/api/v1/grants/gateway"
HOLDER = "gateway"
#: How often the list is fetched again: the staleness of a revocation at the gateway.
REFRESH_S = 2.0
_AUTHORIZATION = b"authorization"
_PEER_KINDS = frozenset({"site", "gateway"})


class GatewayAccess:
    """The gateway's grant list: fetched, verified, cached, checked per request."""

    def __init__(self, session: HubSession, cache_path: Path | None) -> None:
        self.session = session
        self.cache_path = cache_path
        self.keys: KeySet | None = None
        self.grants = GrantList.empty(HOLDER)
        self.source = "none"
        self.last_error: str | None = None

    # --- the list ----------------------------------------------------------------------

    def refresh(self) -> bool:
        """Fetch and verify a new list (blocking; run it off the event loop). On failure
        keep what is held (or load the disk cache at start) and say why in ``last_error``."""
        try:
            doc = self.session.request("GET", GRANTS_PATH).json()
            self._take(doc)
        except (ModelfleetError, ValueError, KeyError, TypeError) as exc:
            message = exc.message if isinstance(exc, ModelfleetError) else str(exc)
            if self.last_error != message:
                log.warning("gateway grant list not refreshed: %s", message)
            self.last_error = message
            if self.source == "none":
                self.load_cache()
            return False
        self.last_error = None
        self.source = "hub"
        self._save(doc)
        return True

    def _take(self, doc: dict[str, Any]) -> None:
        keyset = doc["keyset"]
        text, signature = str(keyset["text"]), str(keyset["signature"])
        self.keys = accept_keyset(self.keys or _first_contact(text), text, signature)
        self.grants = GrantList.verify(
            str(doc["text"]),
            str(doc["signature"]),
            self.keys,
            holder=HOLDER,
            newer_than=self.grants.issued_at,
        )

    def load_cache(self) -> bool:
        """The last list saved (re-verified), for a start while the hub is away."""
        if self.cache_path is None or not self.cache_path.is_file():
            return False
        try:
            self._take(json.loads(self.cache_path.read_text()))
        except (OSError, ValueError, KeyError, TypeError, VerificationError) as exc:
            log.warning("cached gateway grant list %s not used: %s", self.cache_path, exc)
            return False
        self.source = "cache"
        return True

    def _save(self, doc: dict[str, Any]) -> None:
        if self.cache_path is None:
            return
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(doc))
            tmp.replace(self.cache_path)
        except OSError:
            pass  # a read-only home must not stop the gateway

    def close(self) -> None:
        self.session.close()

    # --- the check ---------------------------------------------------------------------

    def check(self, scope: MutableMapping[str, Any], model: str | None) -> Grant | tuple[int, str]:
        """The caller's grant, or (401 or 403, the reason). Over TLS, a verified fleet
        certificate naming a site (a cascade) or a gateway stands for an unscoped grant."""
        peer = (scope.get("extensions") or {}).get(PEER_EXTENSION)
        identity = peer.identity if isinstance(peer, Peer) else None
        if isinstance(peer, Peer) and identity is not None and identity.kind in _PEER_KINDS:
            return Grant(f"cert:{peer.serial}", str(identity), "0" * 64)
        authorization: bytes | None = None
        for key, value in scope["headers"]:
            if key == _AUTHORIZATION:
                authorization = value
                break
        try:
            return self.grants.authorize_raw(authorization, model)
        except Unauthenticated as exc:
            return 401, exc.message
        except PermissionDenied as exc:
            return 403, exc.message


def _first_contact(text: str) -> KeySet:
    """The keys a key set document lists, to check its own signature the first time (trust
    on first use, over the hub connection); afterwards rotations must be endorsed."""
    try:
        doc = json.loads(text)
        keys = {str(e["id"]): load_public_key(str(e["public_key"])) for e in doc["keys"]}
    except (ValueError, KeyError, TypeError, ModelfleetError) as exc:
        raise VerificationError(f"malformed key set document: {exc}") from exc
    return KeySet(keys, 0)


def default_grants_cache(directory_cache: Path | None) -> Path | None:
    """Beside the directory cache: ``directory-<hash>.json`` -> ``grants-<hash>.json``."""
    if directory_cache is None:
        return None
    return directory_cache.with_name(directory_cache.name.replace("directory-", "grants-", 1))
