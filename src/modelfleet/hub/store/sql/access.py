"""Bearer tokens and the audit log in SQL.

Only token hashes are stored, so a leaked database yields no secrets; token rows are never
deleted (revocation keeps them for the audit trail). The audit log is append-only and read
newest first.
"""

from __future__ import annotations

import builtins
import secrets
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from modelfleet.errors import Conflict, InvalidInput
from modelfleet.hub.store.records.access import AuditRecord, TokenRecord
from modelfleet.hub.store.repos.access import AuditRepo, TokenRepo
from modelfleet.hub.store.schema.access import audit, tokens

if TYPE_CHECKING:
    from modelfleet.hub.store.sql.store import SqlStore

#: How long a token lookup may be answered from memory. Every request authenticates, and
#: sites call the hub several times a second during federated rounds; a revocation made
#: through this process is seen at once, one made through another replica within this.
LOOKUP_TTL_S = 1.0


def _to_token(row: Row[Any]) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        name=row.name,
        role=row.role,
        site=row.site,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        models=tuple(row.models) if row.models is not None else None,
        site_selector=row.site_selector,
        last_used_at=row.last_used_at,
    )


def _columns() -> tuple[Any, ...]:
    # Everything except the hash: records never carry it back out.
    return (
        tokens.c.id,
        tokens.c.name,
        tokens.c.role,
        tokens.c.site,
        tokens.c.created_at,
        tokens.c.expires_at,
        tokens.c.revoked_at,
        tokens.c.models,
        tokens.c.site_selector,
        tokens.c.last_used_at,
    )


class SqlTokenRepo(TokenRepo):
    """Token rows are never deleted: revocation keeps them for the audit trail."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._lookups: dict[str, tuple[float, TokenRecord]] = {}
        self._lookups_lock = threading.Lock()

    def _forget_lookups(self) -> None:
        with self._lookups_lock:
            self._lookups.clear()

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
        if expires_at is not None and expires_at.utcoffset() is None:
            raise InvalidInput("expires_at must be timezone-aware")
        token_id = secrets.token_hex(8)
        with self._store.write() as conn:
            try:
                conn.execute(
                    insert(tokens).values(
                        id=token_id,
                        name=name,
                        role=role,
                        token_hash=token_hash,
                        site=site,
                        created_at=self._store.now(),
                        expires_at=expires_at,
                        revoked_at=None,
                        models=list(models) if models is not None else None,
                        site_selector=site_selector,
                    )
                )
            except IntegrityError as exc:
                raise Conflict("a token with this hash already exists") from exc
            row = conn.execute(select(*_columns()).where(tokens.c.id == token_id)).one()
        self._forget_lookups()
        return _to_token(row)

    def find_cached(self, token_hash: str) -> TokenRecord | None:
        with self._lookups_lock:
            cached = self._lookups.get(token_hash)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        return None

    def find_by_hash(self, token_hash: str) -> TokenRecord | None:
        now = time.monotonic()
        cached = self.find_cached(token_hash)
        if cached is not None:
            return cached
        query = select(*_columns()).where(tokens.c.token_hash == token_hash)
        with self._store.read() as conn:
            row = conn.execute(query).one_or_none()
        if row is None:  # not remembered: a token created through another replica works at once
            return None
        record = _to_token(row)
        with self._lookups_lock:
            if len(self._lookups) >= 10_000:
                self._lookups.clear()
            self._lookups[token_hash] = (now + LOOKUP_TTL_S, record)
        return record

    def get(self, token_id: str) -> TokenRecord | None:
        query = select(*_columns()).where(tokens.c.id == token_id)
        with self._store.read() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _to_token(row)

    def list(self) -> list[TokenRecord]:
        query = select(*_columns()).order_by(tokens.c.created_at, tokens.c.id)
        with self._store.read() as conn:
            return [_to_token(row) for row in conn.execute(query)]

    def revoke(self, token_id: str) -> bool:
        stmt = (
            update(tokens)
            .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
            .values(revoked_at=self._store.now())
        )
        with self._store.write() as conn:
            revoked: bool = conn.execute(stmt).rowcount == 1
        self._forget_lookups()
        return revoked

    def active_infer(self, now: datetime) -> builtins.list[tuple[TokenRecord, str]]:
        query = (
            select(*_columns(), tokens.c.token_hash)
            .where(
                tokens.c.role == "infer",
                tokens.c.revoked_at.is_(None),
                or_(tokens.c.expires_at.is_(None), tokens.c.expires_at > now),
            )
            .order_by(tokens.c.id)
        )
        with self._store.read() as conn:
            rows: Any = conn.execute(query)
            return [(_to_token(row), str(row.token_hash)) for row in rows]


class SqlAuditRepo(AuditRepo):
    """Ordered by the autoincrement id, which, unlike ``at``, never ties."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def record(
        self, *, actor: str, action: str, object: str, outcome: str, detail: str = ""
    ) -> None:
        stmt = insert(audit).values(
            at=self._store.now(),
            actor=actor,
            action=action,
            object=object,
            outcome=outcome,
            detail=detail,
        )
        with self._store.write() as conn:
            conn.execute(stmt)

    def list(
        self, *, limit: int = 100, actor: str | None = None, action: str | None = None
    ) -> list[AuditRecord]:
        if limit < 0:
            raise InvalidInput(f"limit must be >= 0, got {limit}")
        query = select(audit).order_by(audit.c.id.desc()).limit(limit)
        if actor is not None:
            query = query.where(audit.c.actor == actor)
        if action is not None:
            query = query.where(audit.c.action == action)
        with self._store.read() as conn:
            return [
                AuditRecord(
                    id=row.id,
                    at=row.at,
                    actor=row.actor,
                    action=row.action,
                    object=row.object,
                    outcome=row.outcome,
                    detail=row.detail,
                )
                for row in conn.execute(query)
            ]
