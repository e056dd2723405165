"""Who may call this site: infer tokens from the signed grant list, or fleet certificates.

Every request but the two health probes (``/v2/health/live|ready``) needs a credential:

- ``Authorization: Bearer <infer token>``, checked offline against the grant list the hub
  signed for this site (:mod:`modelfleet.grants`): one sha256 and one dictionary lookup.
  401 without, or with an unknown or expired token; 403 for a model outside its scope.
- over TLS, a client certificate from the fleet CA naming a site or a gateway (the
  cascade from an edge site, a gateway with its own certificate): the TLS layer verified
  it, the scope says who it names (``modelfleet.peer``, computed once per connection).

The list arrives with every desired state; it is accepted only if a pinned signing key
signed it, it names this site and it is not older than the one held, then saved next to
the key set so a site restarted while the hub is down keeps authorising (re-verified at
start). A token revoked on the hub stops working here when the site next hears from the
hub (its long-poll: well under a second while connected).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelfleet.errors import ModelfleetError, PermissionDenied, Unauthenticated, VerificationError
from modelfleet.grants import GrantList
from modelfleet.pki.files import write_public_file
from modelfleet.pki.tls import PEER_EXTENSION, Peer
from modelfleet.registry.keyset import KeySet

__all__ = ["OPEN_PATHS", "SiteAccess"]

log = logging.getLogger("modelfleet.site")

#: What a load balancer's probes call: answered without a credential (they name no model).
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
#: Certificate holders admitted without a token (the hub never calls a site).
_PEER_KINDS = frozenset({"site", "gateway"})
_AUTHORIZATION = b"authorization"


class SiteAccess:
    """The grant list this site holds and the check every request goes through."""

    def __init__(self, site: str, keys: Callable[[], KeySet], path: Path | None) -> None:
        self.site = site
        self._keys = keys
        self.path = path
        self.grants = GrantList.empty(site)
        self._seen = ""

    def load(self) -> bool:
        """The saved list, re-verified against the pinned keys; False when there is none
        (or it does not verify: then nobody may call until the hub sends one)."""
        if self.path is None or not self.path.exists():
            return False
        try:
            doc = json.loads(self.path.read_text())
            text, signature = str(doc["text"]), str(doc["signature"])
            self.grants = GrantList.verify(
                text, signature, self._keys(), holder=self.site, newer_than=self.grants.issued_at
            )
        except (OSError, ValueError, KeyError, TypeError, VerificationError) as exc:
            log.warning("saved grant list %s not used: %s", self.path, exc)
            return False
        self._seen = text
        return True

    def accept(self, offered: object) -> bool:
        """Take the list from a desired state if it verifies; True when it replaced the
        held one. A refused list is logged and the held one stays."""
        if not isinstance(offered, dict):
            return False
        text, signature = offered.get("text"), offered.get("signature")
        if not isinstance(text, str) or not isinstance(signature, str) or text == self._seen:
            return False
        try:
            grants = GrantList.verify(
                text,
                signature,
                self._keys(),
                holder=self.site,
                newer_than=self.grants.issued_at,
                received_at=datetime.now(UTC),  # expiry is judged on the hub's clock
            )
        except VerificationError as exc:
            # An older list is the saved desired state replayed at start: nothing to say.
            level = logging.DEBUG if "older" in exc.message else logging.WARNING
            log.log(level, "grant list from the hub refused: %s", exc.message)
            return False
        self.grants = grants
        self._seen = text
        if self.path is not None:
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                body = json.dumps({"text": text, "signature": signature}).encode()
                write_public_file(self.path, body, "grant list")
            except (
                OSError,
                ModelfleetError,
            ) as exc:  # serving goes on; a restart would start from the old one
                log.warning("grant list not saved to %s: %s", self.path, exc)
        return True

    def check(self, scope: MutableMapping[str, Any], model: str | None) -> tuple[int, str] | None:
        """None when the request may go on; else (401 or 403, the reason)."""
        peer = (scope.get("extensions") or {}).get(PEER_EXTENSION)
        if (
            isinstance(peer, Peer)
            and peer.identity is not None
            and peer.identity.kind in _PEER_KINDS
        ):
            return None
        authorization: bytes | None = None
        for key, value in scope["headers"]:
            if key == _AUTHORIZATION:
                authorization = value
                break
        try:
            self.grants.authorize_raw(authorization, model)
        except Unauthenticated as exc:
            return 401, exc.message
        except PermissionDenied as exc:
            return 403, exc.message
        return None
