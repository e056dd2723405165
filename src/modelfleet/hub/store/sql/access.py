"""Bearer tokens and the audit log in SQL.

Only token hashes are stored, so a leaked database yields no secrets; token rows are never
deleted (revocation keeps them for the audit trail). The audit log is append-only and read
newest first.
"""

from __future__ import annotations

import builtins
import logging
import secrets
import threading
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Row, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from modelfleet.errors import Conflict, InvalidInput
from modelfleet.hub.store.records.access import AuditRecord, TokenRecord
from modelfleet.hub.store.repos.access import AuditRepo, TokenRepo
from modelfleet.hub.store.schema.access import audit, tokens
from modelfleet.loops import BackgroundLoop

if TYPE_CHECKING:
    from modelfleet.hub.store.sql.store import SqlStore

#: How long a token lookup may be answered from memory. Every request authenticates, and
#: sites call the hub several times a second during federated rounds; a revocation made
#: through this process is seen at once, one made through another replica within this.
LOOKUP_TTL_S = 1.0

#: ``last_used_at`` is written at most this often per token (per process, and the UPDATE's
#: own condition holds it across replicas): "when was this token last used" needs minutes,
#: not a write per request.
LAST_USE_EVERY_S = 60.0

#: How long a noted use may wait in memory before the writer stores it.
LAST_USE_FLUSH_S = 2.0

LAST_ADMIN_MESSAGE = (
    "token {id!r} is the last active admin token: revoking it would lock every admin out "
    "of the hub. Create another admin token first (`modelfleet token create --role admin`); "
    "if every admin token is lost, run `modelfleet hub token recover --data-dir DIR` on the "
    "hub's machine"
)

log = logging.getLogger(__name__)

#: The role of the token enrollment gives a site (``Role.SITE`` in ``hub.auth``).
SITE_ROLE = "site"


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


def insert_token(
    conn: Connection,
    now: datetime,
    *,
    name: str,
    role: str,
    token_hash: str,
    site: str | None = None,
    expires_at: datetime | None = None,
    models: tuple[str, ...] | None = None,
    site_selector: str | None = None,
) -> str:
    """Insert a token row in the caller's transaction; its id. ``Conflict`` if the hash
    is taken. The caller clears the lookup cache once its transaction commits."""
    token_id = secrets.token_hex(8)
    try:
        conn.execute(
            insert(tokens).values(
                id=token_id,
                name=name,
                role=role,
                token_hash=token_hash,
                site=site,
                created_at=now,
                expires_at=expires_at,
                revoked_at=None,
                models=list(models) if models is not None else None,
                site_selector=site_selector,
            )
        )
    except IntegrityError as exc:
        raise Conflict("a token with this hash already exists") from exc
    return token_id


def revoke_site_tokens(conn: Connection, site: str, now: datetime) -> int:
    """Revoke the unrevoked ``site`` tokens bound to ``site`` in the caller's transaction;
    how many. Never an admin token, so the last-admin guard of :meth:`SqlTokenRepo.revoke`
    has nothing to check here."""
    stmt = (
        update(tokens)
        .where(tokens.c.site == site, tokens.c.role == SITE_ROLE, tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(conn.execute(stmt).rowcount)


class SqlTokenRepo(TokenRepo):
    """Token rows are never deleted: revocation keeps them for the audit trail."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._lookups: dict[str, tuple[float, TokenRecord]] = {}
        # Hashes found in no row, remembered as long: a loop of wrong tokens costs a dict
        # lookup, not a query each (a token created here clears it at once; one created
        # through another replica works here within LOOKUP_TTL_S).
        self._misses: dict[str, float] = {}
        self._lookups_lock = threading.Lock()
        # Last use: when each token was last noted (monotonic), and the uses to write.
        self._noted: dict[str, float] = {}
        self._pending: dict[str, datetime] = {}
        self._use_lock = threading.Lock()
        self._writer = BackgroundLoop(
            "token-last-use",
            self._flush_uses,
            interval_s=LAST_USE_FLUSH_S,
            logger=log,
            failure_message="recording token last use failed",
        )

    def forget_lookups(self) -> None:
        """Drop remembered lookups: tokens changed (also called by the enrollment
        transaction, which writes tokens from the sites repository)."""
        with self._lookups_lock:
            self._lookups.clear()
            self._misses.clear()

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
        with self._store.write() as conn:
            token_id = insert_token(
                conn,
                self._store.now(),
                name=name,
                role=role,
                token_hash=token_hash,
                site=site,
                expires_at=expires_at,
                models=models,
                site_selector=site_selector,
            )
            row = conn.execute(select(*_columns()).where(tokens.c.id == token_id)).one()
        self.forget_lookups()
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
        with self._lookups_lock:
            missed = self._misses.get(token_hash)
        if missed is not None and missed > now:
            return None
        query = select(*_columns()).where(tokens.c.token_hash == token_hash)
        with self._store.read() as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            with self._lookups_lock:
                if len(self._misses) >= 10_000:
                    self._misses.clear()
                self._misses[token_hash] = now + LOOKUP_TTL_S
            return None
        record = _to_token(row)
        with self._lookups_lock:
            if len(self._lookups) >= 10_000:
                self._lookups.clear()
            self._lookups[token_hash] = (now + LOOKUP_TTL_S, record)
        return record

    def note_use(self, token_id: str) -> None:
        now = time.monotonic()
        with self._use_lock:
            last = self._noted.get(token_id)
            if last is not None and now - last < LAST_USE_EVERY_S:
                return
            if len(self._noted) >= 100_000:
                self._noted.clear()
            self._noted[token_id] = now
            self._pending[token_id] = self._store.now()
        self._writer.start()  # idempotent; a store that never authenticates never starts it
        self._writer.wake()

    def _flush_uses(self) -> None:
        with self._use_lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        with self._store.write() as conn:
            for token_id, at in pending.items():
                # Another replica may have written it within the minute: then leave it.
                conn.execute(
                    update(tokens)
                    .where(
                        tokens.c.id == token_id,
                        or_(
                            tokens.c.last_used_at.is_(None),
                            tokens.c.last_used_at < at - timedelta(seconds=LAST_USE_EVERY_S),
                        ),
                    )
                    .values(last_used_at=at)
                )

    def close(self) -> None:
        """Write the uses still in memory and stop the writer."""
        if not self._writer.running:
            return
        self._writer.stop()
        try:
            self._flush_uses()
        except Exception:  # closing must not fail on a last-use write
            log.warning("last token uses not recorded at close", exc_info=True)

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
        now = self._store.now()
        with self._store.write() as conn:
            target = conn.execute(
                select(tokens.c.role).where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
            ).one_or_none()
            if target is None:
                return False
            if target.role == "admin":
                # Lock every active admin row, always in id order (two revocations lock in
                # the same order: no deadlock). On PostgreSQL a concurrent revocation of
                # the other last admin waits here, then sees that row revoked, so two
                # admins revoking each other at once cannot leave none; SQLite has a
                # single writer anyway.
                admins = conn.execute(
                    select(tokens.c.id)
                    .where(
                        tokens.c.role == "admin",
                        tokens.c.revoked_at.is_(None),
                        or_(tokens.c.expires_at.is_(None), tokens.c.expires_at > now),
                    )
                    .order_by(tokens.c.id)
                    .with_for_update()
                ).all()
                ids = {row.id for row in admins}
                if ids == {token_id}:
                    raise Conflict(LAST_ADMIN_MESSAGE.format(id=token_id))
            stmt = (
                update(tokens)
                .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            revoked: bool = conn.execute(stmt).rowcount == 1
        self.forget_lookups()
        return revoked

    def active_for_grants(self, now: datetime) -> builtins.list[tuple[TokenRecord, str]]:
        query = (
            select(*_columns(), tokens.c.token_hash)
            .where(
                tokens.c.role != "site",
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

    def prune(self, before: datetime) -> int:
        if before.utcoffset() is None:
            raise InvalidInput("before must be timezone-aware")
        with self._store.write() as conn:
            return int(conn.execute(delete(audit).where(audit.c.at < before)).rowcount)

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
        if limit < 0 or offset < 0:
            raise InvalidInput(f"limit and offset must be >= 0, got {limit} and {offset}")
        query = select(audit).order_by(audit.c.id.desc()).limit(limit).offset(offset)
        for column, value in (
            (audit.c.actor, actor),
            (audit.c.action, action),
            (audit.c.object, object),
            (audit.c.outcome, outcome),
        ):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(audit.c.at >= since)
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
