"""The hub's side of inference grants: which ``infer`` tokens each site and gateway honours.

Sites and gateways check inference callers offline (:mod:`modelfleet.grants`), from a list
the hub signs for each of them (the infer tokens valid there, and every other active token
but site tokens as a refusal, so that it gets a 403, not a 401): a site's list travels in
its desired state, a gateway's comes from ``GET /api/v1/grants/gateway``. Both are built
from one table-wide read of the active infer tokens, shared by every caller for at most
:data:`TOKENS_MAX_AGE_S` (thousands of long-polling sites cost one query a second); a
token created or revoked through this process is seen at once
(:meth:`GrantIssuer.forget`). The snapshot's fingerprint is part of every desired state's
ETag, so a change reaches every site's long-poll.

Lists are signed with ``issued_at`` = when served: a holder refuses a list older than the
one it holds, so a replayed old list cannot revive a revoked token.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from modelfleet.errors import ModelfleetError
from modelfleet.grants import Grant, sign_grants
from modelfleet.hub.auth import Role
from modelfleet.hub.registry import Registry
from modelfleet.hub.selectors import Selector, Term, parse_selector
from modelfleet.hub.store import Store
from modelfleet.hub.store.records import TokenRecord

__all__ = ["GATEWAY_HOLDER", "TOKENS_MAX_AGE_S", "GrantIssuer"]

#: How old the shared snapshot of infer tokens may be (revocations through another replica).
TOKENS_MAX_AGE_S = 1.0
#: The holder name of a gateway's grant list (sites hold lists under their own names).
GATEWAY_HOLDER = "gateway"


@dataclass(frozen=True)
class _Snapshot:
    read_at: float
    tokens: tuple[tuple[TokenRecord, str], ...]
    fingerprint: str


class GrantIssuer:
    """Builds and signs grant lists from the active infer tokens."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self._snapshot = _Snapshot(-math.inf, (), "")
        self._lock = threading.Lock()
        self._selectors: dict[str, Selector] = {}

    def forget(self) -> None:
        """A token changed through this process: the next read is exact."""
        self._snapshot = _Snapshot(-math.inf, (), "")

    def known_fingerprint(self) -> str | None:
        """The fingerprint of a snapshot at most :data:`TOKENS_MAX_AGE_S` old, without I/O;
        None when it must be read (:meth:`fingerprint`)."""
        snapshot = self._snapshot
        if time.monotonic() - snapshot.read_at > TOKENS_MAX_AGE_S:
            return None
        return snapshot.fingerprint

    def fingerprint(self) -> str:
        """Short hash of the active infer tokens and their scopes: part of the ETag."""
        return self._tokens().fingerprint

    def _tokens(self) -> _Snapshot:
        snapshot = self._snapshot
        if time.monotonic() - snapshot.read_at <= TOKENS_MAX_AGE_S:
            return snapshot
        with self._lock:  # one caller reads; the rest find it fresh
            snapshot = self._snapshot
            if time.monotonic() - snapshot.read_at <= TOKENS_MAX_AGE_S:
                return snapshot
            read_at = time.monotonic()
            tokens: tuple[tuple[TokenRecord, str], ...] = tuple(
                self.store.tokens.active_for_grants(datetime.now(UTC))
            )
            digest = hashlib.sha256()
            for record, token_hash in tokens:
                scope = f"{record.role}|{record.models}|{record.site_selector}|{record.expires_at}"
                digest.update(f"{record.id}|{token_hash}|{scope}\n".encode())
            snapshot = _Snapshot(read_at, tokens, digest.hexdigest()[:12])
            self._snapshot = snapshot
            return snapshot

    def _selector(self, text: str) -> Selector:
        selector = self._selectors.get(text)
        if selector is None:
            if len(self._selectors) > 1000:
                self._selectors.clear()
            # Validated at creation; a selector that no longer parses selects nothing.
            try:
                selector = parse_selector(text)
            except ModelfleetError:
                selector = Selector((Term("-", "in", ()),))  # an empty set: never matches
            self._selectors[text] = selector
        return selector

    def _matches(self, record: TokenRecord, labels: Mapping[str, str]) -> bool:
        return record.site_selector is None or self._selector(record.site_selector).matches(
            dict(labels)
        )

    def for_site(self, site: str, labels: Mapping[str, str]) -> dict[str, str]:
        """The signed list of the infer tokens a site honours (selector matches or none),
        and a refusal for every other token: ``{"text", "signature", "fingerprint"}``."""
        snapshot = self._tokens()
        grants = []
        for record, token_hash in snapshot.tokens:
            if record.role != Role.INFER:
                grants.append(_refused(record, token_hash, _role_refusal(record)))
            elif not self._matches(record, labels):
                refusal = (
                    f"token {record.name!r} may not call models at {site}: its site "
                    f"selector {record.site_selector!r} does not select this site"
                )
                grants.append(_refused(record, token_hash, refusal))
            else:
                grants.append(_grant(record, token_hash))
        return self._signed(site, grants, snapshot.fingerprint)

    def for_gateway(self, sites: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
        """A gateway's list: every infer token, each with the names of the sites its
        selector matches now (``sites`` maps name -> labels), so the gateway routes a scoped
        caller only there without parsing selectors itself."""
        snapshot = self._tokens()
        grants = []
        for record, token_hash in snapshot.tokens:
            if record.role != Role.INFER:
                grants.append(_refused(record, token_hash, _role_refusal(record)))
                continue
            allowed = None
            if record.site_selector is not None:
                allowed = tuple(
                    sorted(name for name, labels in sites.items() if self._matches(record, labels))
                )
            grants.append(_grant(record, token_hash, allowed))
        return self._signed(GATEWAY_HOLDER, grants, snapshot.fingerprint)

    def _signed(self, holder: str, grants: list[Grant], fingerprint: str) -> dict[str, str]:
        self.registry.signed_keyset()  # re-reads a rotated key set (at most once a second)
        text, signature = sign_grants(
            holder, grants, self.registry.keys.current, issued_at=datetime.now(UTC)
        )
        return {"text": text, "signature": signature, "fingerprint": fingerprint}


def _grant(record: TokenRecord, token_hash: str, sites: tuple[str, ...] | None = None) -> Grant:
    return Grant(
        token_id=record.id,
        name=record.name,
        token_hash=token_hash,
        models=record.models,
        expires_at=record.expires_at,
        sites=sites,
    )


def _refused(record: TokenRecord, token_hash: str, refusal: str) -> Grant:
    """A token the holder should know but answer 403 for (no models, no sites)."""
    return Grant(
        token_id=record.id,
        name=record.name,
        token_hash=token_hash,
        models=(),
        expires_at=record.expires_at,
        sites=(),
        refusal=refusal,
    )


def _role_refusal(record: TokenRecord) -> str:
    return (
        f"token {record.name!r} has role {record.role}, which cannot call models; "
        "inference needs a token of role infer (modelfleet token create --role infer)"
    )
