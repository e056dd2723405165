"""The event log and webhook delivery in SQL: the queries both backends share.

Appends are serialised (PostgreSQL: a transaction-level advisory lock; SQLite: its one
writer), so event ids become visible in increasing order and a reader resuming after id N
never misses a lower id that committed later. Queueing a target's events is a
compare-and-set on its cursor; a delivery row is keyed by (target, event).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from modelfleet.errors import Conflict, NotFound
from modelfleet.hub.store.records.events import DeliveryRecord, EventRecord, WebhookRecord
from modelfleet.hub.store.repos.events import EventRepo, type_matches
from modelfleet.hub.store.schema.events import events, webhook_deliveries, webhooks

if TYPE_CHECKING:
    from modelfleet.hub.store.sql.store import SqlStore

#: The advisory lock that serialises event appends on PostgreSQL (per database).
_APPEND_LOCK = int.from_bytes(hashlib.sha256(b"modelfleet-events").digest()[:8], "big", signed=True)


def _event(row: Any) -> EventRecord:
    return EventRecord(
        id=row.id,
        key=row.key,
        type=row.type,
        subject=row.subject,
        at=row.at,
        payload=dict(row.payload),
    )


def _target(row: Any) -> WebhookRecord:
    return WebhookRecord(
        id=row.id,
        url=row.url,
        events=list(row.events),
        format=row.format,
        secret=row.secret,
        description=row.description,
        cursor=row.cursor,
        max_attempts=row.max_attempts,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def _delivery(row: Any) -> DeliveryRecord:
    return DeliveryRecord(
        target_id=row.target_id,
        event_id=row.event_id,
        state=row.state,
        attempts=row.attempts,
        next_at=row.next_at,
        last_error=row.last_error,
        updated_at=row.updated_at,
    )


def _type_filter(types: Sequence[str]) -> ColumnElement[bool] | None:
    terms: list[ColumnElement[bool]] = []
    for pattern in types:
        if pattern == "*":
            return None
        if pattern.endswith(".*"):
            terms.append(events.c.type.startswith(pattern[:-1], autoescape=True))
        else:
            terms.append(events.c.type == pattern)
    return or_(*terms) if terms else false()


class SqlEventRepo(EventRepo):
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def now(self) -> datetime:
        return self._store.now()

    # --- the log -------------------------------------------------------------------

    def append(
        self, key: str, type: str, subject: str, payload: dict[str, Any]
    ) -> EventRecord | None:
        with self._store.write() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text(f"SELECT pg_advisory_xact_lock({_APPEND_LOCK})"))
            if conn.execute(select(events.c.id).where(events.c.key == key)).first():
                return None
            values = {
                "key": key,
                "type": type,
                "subject": subject,
                "at": self._store.now(),
                "payload": payload,
            }
            stmt = pg_insert(events) if conn.dialect.name == "postgresql" else sqlite_insert(events)
            row = conn.execute(
                stmt.values(**values)
                .on_conflict_do_nothing(index_elements=["key"])
                .returning(*events.c)
            ).first()
            return _event(row) if row is not None else None

    def list_events(
        self, *, after: int = 0, types: Sequence[str] | None = None, limit: int = 100
    ) -> list[EventRecord]:
        query = select(*events.c).where(events.c.id > after)
        if types:
            where = _type_filter(types)
            if where is not None:
                query = query.where(where)
        with self._store.read() as conn:
            rows = conn.execute(query.order_by(events.c.id).limit(limit)).all()
        return [_event(r) for r in rows]

    def get(self, event_ids: Sequence[int]) -> dict[int, EventRecord]:
        if not event_ids:
            return {}
        with self._store.read() as conn:
            rows = conn.execute(select(*events.c).where(events.c.id.in_(list(event_ids)))).all()
        return {r.id: _event(r) for r in rows}

    def last_id(self) -> int:
        with self._store.read() as conn:
            return self._last_id(conn)

    @staticmethod
    def _last_id(conn: Connection) -> int:
        return int(conn.execute(select(func.coalesce(func.max(events.c.id), 0))).scalar_one())

    def latest(self, subject: str, types: Sequence[str]) -> EventRecord | None:
        with self._store.read() as conn:
            row = conn.execute(
                select(*events.c)
                .where(events.c.subject == subject, events.c.type.in_(list(types)))
                .order_by(events.c.id.desc())
                .limit(1)
            ).first()
        return _event(row) if row is not None else None

    def prune(self, *, before: datetime, keep: int) -> int:
        with self._store.write() as conn:
            floor = self._last_id(conn) - keep
            needed = select(webhook_deliveries.c.event_id)
            result = conn.execute(
                delete(events).where(
                    or_(events.c.at < before, events.c.id <= floor),
                    events.c.id.not_in(needed),
                )
            )
            return int(result.rowcount or 0)

    # --- webhook targets -----------------------------------------------------------

    def create_target(self, target: WebhookRecord) -> WebhookRecord:
        with self._store.write() as conn:
            try:
                conn.execute(
                    insert(webhooks).values(
                        id=target.id,
                        url=target.url,
                        events=list(target.events),
                        format=target.format,
                        secret=target.secret,
                        description=target.description,
                        cursor=target.cursor,
                        max_attempts=target.max_attempts,
                        created_by=target.created_by,
                        created_at=target.created_at,
                    )
                )
            except IntegrityError as exc:
                raise Conflict(f"webhook {target.id!r} already exists") from exc
        return self.get_target(target.id)

    def list_targets(self) -> list[WebhookRecord]:
        with self._store.read() as conn:
            rows = conn.execute(
                select(*webhooks.c).order_by(webhooks.c.created_at, webhooks.c.id)
            ).all()
        return [_target(r) for r in rows]

    def get_target(self, target_id: str) -> WebhookRecord:
        with self._store.read() as conn:
            row = conn.execute(select(*webhooks.c).where(webhooks.c.id == target_id)).first()
        if row is None:
            raise NotFound(f"no webhook with id {target_id!r} (see `modelfleet webhook ls`)")
        return _target(row)

    def delete_target(self, target_id: str) -> None:
        with self._store.write() as conn:
            conn.execute(
                delete(webhook_deliveries).where(webhook_deliveries.c.target_id == target_id)
            )
            if not conn.execute(delete(webhooks).where(webhooks.c.id == target_id)).rowcount:
                raise NotFound(f"no webhook with id {target_id!r} (see `modelfleet webhook ls`)")

    # --- deliveries ----------------------------------------------------------------

    def enqueue(self, target_id: str, *, limit: int = 500) -> int:
        with self._store.write() as conn:
            row = conn.execute(
                select(webhooks.c.cursor, webhooks.c.events).where(webhooks.c.id == target_id)
            ).first()
            if row is None:
                return 0
            cursor, patterns = int(row.cursor), list(row.events)
            scanned = conn.execute(
                select(events.c.id, events.c.type)
                .where(events.c.id > cursor)
                .order_by(events.c.id)
                .limit(limit)
            ).all()
            if not scanned:
                return 0
            moved = conn.execute(
                update(webhooks)
                .where(webhooks.c.id == target_id, webhooks.c.cursor == cursor)
                .values(cursor=int(scanned[-1].id))
            )
            if not moved.rowcount:
                return 0  # another process queued them
            now = self._store.now()
            wanted = [r.id for r in scanned if type_matches(patterns, r.type)]
            if wanted:
                conn.execute(
                    insert(webhook_deliveries),
                    [
                        {
                            "target_id": target_id,
                            "event_id": event_id,
                            "state": "pending",
                            "attempts": 0,
                            "next_at": now,
                            "last_error": "",
                            "updated_at": now,
                        }
                        for event_id in wanted
                    ],
                )
            return len(wanted)

    def due(self, target_id: str, now: datetime, *, limit: int = 50) -> list[DeliveryRecord]:
        d = webhook_deliveries.c
        with self._store.read() as conn:
            rows = conn.execute(
                select(*webhook_deliveries.c)
                .where(d.target_id == target_id, d.state == "pending", d.next_at <= now)
                .order_by(d.event_id)
                .limit(limit)
            ).all()
        return [_delivery(r) for r in rows]

    def _one(self, target_id: str, event_id: int) -> ColumnElement[bool]:
        d = webhook_deliveries.c
        return and_(d.target_id == target_id, d.event_id == event_id)

    def acknowledge(self, target_id: str, event_id: int) -> None:
        with self._store.write() as conn:
            conn.execute(delete(webhook_deliveries).where(self._one(target_id, event_id)))

    def retry_later(
        self, target_id: str, event_id: int, *, attempts: int, next_at: datetime, error: str
    ) -> None:
        with self._store.write() as conn:
            conn.execute(
                update(webhook_deliveries)
                .where(self._one(target_id, event_id))
                .values(
                    attempts=attempts,
                    next_at=next_at,
                    last_error=error[:1000],
                    updated_at=self._store.now(),
                )
            )

    def dead_letter(self, target_id: str, event_id: int, *, attempts: int, error: str) -> None:
        with self._store.write() as conn:
            conn.execute(
                update(webhook_deliveries)
                .where(self._one(target_id, event_id))
                .values(
                    state="dead",
                    attempts=attempts,
                    last_error=error[:1000],
                    updated_at=self._store.now(),
                )
            )

    def dead_letters(self, target_id: str, *, limit: int = 100) -> list[DeliveryRecord]:
        d = webhook_deliveries.c
        with self._store.read() as conn:
            rows = conn.execute(
                select(*webhook_deliveries.c)
                .where(d.target_id == target_id, d.state == "dead")
                .order_by(d.event_id)
                .limit(limit)
            ).all()
        return [_delivery(r) for r in rows]

    def pending_count(self, target_id: str) -> int:
        d = webhook_deliveries.c
        with self._store.read() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(webhook_deliveries)
                    .where(d.target_id == target_id, d.state == "pending")
                ).scalar_one()
            )

    def redeliver(self, target_id: str, event_ids: Sequence[int] | None = None) -> int:
        d = webhook_deliveries.c
        now = self._store.now()
        stmt = update(webhook_deliveries).where(d.target_id == target_id, d.state == "dead")
        if event_ids is not None:
            stmt = stmt.where(d.event_id.in_(list(event_ids)))
        with self._store.write() as conn:
            result = conn.execute(
                stmt.values(state="pending", attempts=0, next_at=now, updated_at=now)
            )
            return int(result.rowcount or 0)
