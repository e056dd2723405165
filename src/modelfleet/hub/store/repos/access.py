"""Repositories of access control: bearer tokens and the audit log."""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from datetime import datetime

from modelfleet.hub.store.records.access import AuditRecord, TokenRecord


class TokenRepo(ABC):
    """Bearer tokens, stored by hash."""

    @abstractmethod
    def create(
        self,
        *,
        name: str,
        role: str,
        token_hash: str,
        site: str | None = None,
        expires_at: datetime | None = None,
        models: tuple[str, ...] | None = None,
        site_selector: str | None = None,
    ) -> TokenRecord:
        """A new token; ``models``/``site_selector`` scope an ``infer`` token."""

    @abstractmethod
    def find_by_hash(self, token_hash: str) -> TokenRecord | None: ...

    def find_cached(self, token_hash: str) -> TokenRecord | None:
        """``find_by_hash`` answered from memory only, None when that needs the database:
        lets the event loop authenticate a frequent caller without a thread hop."""
        return None

    @abstractmethod
    def note_use(self, token_id: str) -> None:
        """The hub just authenticated this token: remember when, for ``last_used_at``.

        Called on every authenticated request, on the event loop too, so it must not do
        I/O: implementations keep it in memory and write at most once a minute per token,
        off the request path."""

    @abstractmethod
    def get(self, token_id: str) -> TokenRecord | None: ...

    @abstractmethod
    def list(self) -> list[TokenRecord]:
        """All tokens, oldest first, revoked ones included."""

    @abstractmethod
    def revoke(self, token_id: str) -> bool:
        """Mark revoked; False if unknown or already revoked. Raises ``Conflict`` for the
        last active admin token: revoking it would lock every admin out of the hub."""

    @abstractmethod
    def active_for_grants(self, now: datetime) -> builtins.list[tuple[TokenRecord, str]]:
        """Every token active at ``now`` with its hash, ordered by id, except site tokens
        (one per site, and sites authenticate with certificates): what the signed grant
        lists carry. The one read that returns hashes (records never do)."""


class AuditRepo(ABC):
    """Append-only log of every mutating call."""

    @abstractmethod
    def record(
        self, *, actor: str, action: str, object: str, outcome: str, detail: str = ""
    ) -> None: ...

    @abstractmethod
    def list(
        self,
        *,
        limit: int = 100,
        actor: str | None = None,
        action: str | None = None,
        object: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        offset: int = 0,
    ) -> list[AuditRecord]:
        """Newest first; each filter given must match exactly (``since``: at or after it);
        ``offset`` entries of the match are skipped (a page further back)."""

    @abstractmethod
    def prune(self, before: datetime) -> int:
        """Delete the entries recorded before ``before`` (retention); how many went."""
