"""The audit log in SQL: append-only, read newest first."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import insert, select

from modelfleet.errors import InvalidInput
from modelfleet.hub.store.base import AuditRepo
from modelfleet.hub.store.records import AuditRecord
from modelfleet.hub.store.schema import audit

if TYPE_CHECKING:
    from modelfleet.hub.store.sql import SqlStore


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
