"""Schedules, triggers and their fires in SQL: the queries both backends share.

A slot is claimed with an insert that ignores a conflict on ``(kind, name, slot)``
(``ON CONFLICT DO NOTHING`` on both SQLite and PostgreSQL): the one writer whose row went
in acts. Cursors and trigger counters move by compare-and-set (``UPDATE ... WHERE`` the
value read), so concurrent judges write each change once.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from modelfleet.errors import NotFound
from modelfleet.hub.store.records.schedules import FireRecord, ScheduleRecord, TriggerRecord
from modelfleet.hub.store.repos.schedules import ScheduleRepo
from modelfleet.hub.store.schema.schedules import automation_fires, schedules, triggers

if TYPE_CHECKING:
    from modelfleet.hub.store.sql.store import SqlStore


def _schedule(row: Any) -> ScheduleRecord:
    return ScheduleRecord(
        name=row.name,
        cron=row.cron,
        timezone=row.timezone,
        action=dict(row.action),
        enabled=bool(row.enabled),
        misfire_grace_s=float(row.misfire_grace_s),
        description=row.description,
        cursor=row.cursor,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _trigger(row: Any) -> TriggerRecord:
    return TriggerRecord(
        name=row.name,
        condition=dict(row.condition),
        action=dict(row.action),
        cooldown_s=float(row.cooldown_s),
        enabled=bool(row.enabled),
        description=row.description,
        state=dict(row.state),
        fires=int(row.fires),
        last_fired_at=row.last_fired_at,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _fire(row: Any) -> FireRecord:
    return FireRecord(
        id=row.id,
        kind=row.kind,
        name=row.name,
        slot=row.slot,
        state=row.state,
        action=row.action,
        job=row.job,
        detail=row.detail,
        reason=row.reason,
        owner=row.owner,
        claimed_at=row.claimed_at,
        finished_at=row.finished_at,
    )


def _insert_fire(conn: Connection, values: dict[str, Any]) -> FireRecord | None:
    stmt = (
        pg_insert(automation_fires)
        if conn.dialect.name == "postgresql"
        else sqlite_insert(automation_fires)
    )
    row = conn.execute(
        stmt.values(**values)
        .on_conflict_do_nothing(index_elements=["kind", "name", "slot"])
        .returning(*automation_fires.c)
    ).first()
    return _fire(row) if row is not None else None


class SqlScheduleRepo(ScheduleRepo):
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def _save(self, table: Table, values: dict[str, Any]) -> None:
        with self._store.write() as conn:
            found = conn.execute(select(table.c.name).where(table.c.name == values["name"]))
            if found.first() is None:
                conn.execute(insert(table).values(**values))
            else:
                conn.execute(update(table).where(table.c.name == values["name"]).values(**values))

    def _delete(self, table: Table, kind: str, name: str) -> None:
        with self._store.write() as conn:
            gone = conn.execute(delete(table).where(table.c.name == name)).rowcount
            if not gone:
                raise NotFound(f"{kind} {name!r} does not exist")
            conn.execute(
                delete(automation_fires).where(
                    automation_fires.c.kind == kind, automation_fires.c.name == name
                )
            )

    # --- schedules -----------------------------------------------------------------

    def save_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        self._save(schedules, dict(record.__dict__))
        return self.get_schedule(record.name)

    def get_schedule(self, name: str) -> ScheduleRecord:
        with self._store.read() as conn:
            row = conn.execute(select(*schedules.c).where(schedules.c.name == name)).first()
        if row is None:
            raise NotFound(f"schedule {name!r} does not exist")
        return _schedule(row)

    def list_schedules(self) -> list[ScheduleRecord]:
        with self._store.read() as conn:
            rows = conn.execute(select(*schedules.c).order_by(schedules.c.name)).all()
        return [_schedule(r) for r in rows]

    def delete_schedule(self, name: str) -> None:
        self._delete(schedules, "schedule", name)

    def advance_cursor(self, name: str, expected: datetime, cursor: datetime) -> bool:
        with self._store.write() as conn:
            moved = conn.execute(
                update(schedules)
                .where(schedules.c.name == name, schedules.c.cursor == expected)
                .values(cursor=cursor)
            ).rowcount
        return bool(moved)

    # --- triggers ------------------------------------------------------------------

    def save_trigger(self, record: TriggerRecord) -> TriggerRecord:
        self._save(triggers, dict(record.__dict__))
        return self.get_trigger(record.name)

    def get_trigger(self, name: str) -> TriggerRecord:
        with self._store.read() as conn:
            row = conn.execute(select(*triggers.c).where(triggers.c.name == name)).first()
        if row is None:
            raise NotFound(f"trigger {name!r} does not exist")
        return _trigger(row)

    def list_triggers(self) -> list[TriggerRecord]:
        with self._store.read() as conn:
            rows = conn.execute(select(*triggers.c).order_by(triggers.c.name)).all()
        return [_trigger(r) for r in rows]

    def delete_trigger(self, name: str) -> None:
        self._delete(triggers, "trigger", name)

    def set_trigger_state(self, name: str, expected_fires: int, state: dict[str, Any]) -> bool:
        with self._store.write() as conn:
            moved = conn.execute(
                update(triggers)
                .where(triggers.c.name == name, triggers.c.fires == expected_fires)
                .values(state=state)
            ).rowcount
        return bool(moved)

    # --- fires ---------------------------------------------------------------------

    def claim_slot(
        self,
        kind: str,
        name: str,
        slot: datetime,
        *,
        state: str,
        action: str,
        owner: str,
        at: datetime,
        reason: str = "",
    ) -> FireRecord | None:
        values = {
            "kind": kind,
            "name": name,
            "slot": slot,
            "state": state,
            "action": action,
            "job": None,
            "detail": "",
            "reason": reason,
            "owner": owner,
            "claimed_at": at,
            "finished_at": None if state == "firing" else at,
        }
        with self._store.write() as conn:
            return _insert_fire(conn, values)

    def claim_trigger_fire(
        self,
        name: str,
        expected_fires: int,
        *,
        at: datetime,
        state: dict[str, Any],
        action: str,
        owner: str,
        reason: str,
    ) -> FireRecord | None:
        with self._store.write() as conn:
            counted = conn.execute(
                update(triggers)
                .where(triggers.c.name == name, triggers.c.fires == expected_fires)
                .values(fires=expected_fires + 1, last_fired_at=at, state=state)
            ).rowcount
            if not counted:
                return None
            return _insert_fire(
                conn,
                {
                    "kind": "trigger",
                    "name": name,
                    "slot": at,
                    "state": "firing",
                    "action": action,
                    "job": None,
                    "detail": "",
                    "reason": reason,
                    "owner": owner,
                    "claimed_at": at,
                    "finished_at": None,
                },
            )

    def finish_fire(
        self, fire_id: int, *, state: str, job: str | None, detail: str, at: datetime
    ) -> FireRecord:
        with self._store.write() as conn:
            row = conn.execute(
                update(automation_fires)
                .where(automation_fires.c.id == fire_id)
                .values(state=state, job=job, detail=detail, finished_at=at)
                .returning(*automation_fires.c)
            ).first()
        if row is None:
            raise NotFound(f"fire {fire_id} does not exist (its schedule was removed)")
        return _fire(row)

    def list_fires(self, kind: str, name: str, *, limit: int = 100) -> list[FireRecord]:
        query = (
            select(*automation_fires.c)
            .where(automation_fires.c.kind == kind, automation_fires.c.name == name)
            .order_by(automation_fires.c.slot.desc(), automation_fires.c.id.desc())
            .limit(limit)
        )
        with self._store.read() as conn:
            rows = conn.execute(query).all()
        return [_fire(r) for r in rows]

    def latest_fires(self, kind: str) -> dict[str, FireRecord]:
        newest = (
            select(automation_fires.c.name, func.max(automation_fires.c.slot).label("slot"))
            .where(automation_fires.c.kind == kind)
            .group_by(automation_fires.c.name)
            .subquery()
        )
        query = select(*automation_fires.c).join(
            newest,
            (automation_fires.c.name == newest.c.name)
            & (automation_fires.c.slot == newest.c.slot)
            & (automation_fires.c.kind == kind),
        )
        with self._store.read() as conn:
            rows = conn.execute(query).all()
        return {r.name: _fire(r) for r in rows}

    def stale_fires(self, *, claimed_before: datetime, not_owner: str) -> list[FireRecord]:
        query = select(*automation_fires.c).where(
            automation_fires.c.state == "firing",
            automation_fires.c.claimed_at < claimed_before,
            automation_fires.c.owner != not_owner,
        )
        with self._store.read() as conn:
            rows = conn.execute(query.order_by(automation_fires.c.id).limit(100)).all()
        return [_fire(r) for r in rows]
