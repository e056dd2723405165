"""Accuracy windows in SQL: insert-ignore by (site, window id), reads by model, pruning by
end time (retention)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Insert, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from modelfleet.errors import InvalidInput
from modelfleet.hub.store.records.accuracy import AccuracyWindow
from modelfleet.hub.store.repos.accuracy import AccuracyRepo
from modelfleet.hub.store.schema.accuracy import accuracy_windows

if TYPE_CHECKING:
    from modelfleet.hub.store.sql.store import SqlStore

_T = accuracy_windows


def _insert_ignore(conn: Connection) -> Insert:
    if conn.dialect.name == "postgresql":
        return pg_insert(_T).on_conflict_do_nothing(index_elements=["site", "window_id"])
    return sqlite_insert(_T).on_conflict_do_nothing(index_elements=["site", "window_id"])


def _record(row: Any) -> AccuracyWindow:
    return AccuracyWindow(
        site=row.site,
        window_id=row.window_id,
        model=row.model,
        version=row.version,
        start_at=row.start_at,
        end_at=row.end_at,
        kind=row.kind,
        labels=int(row.labels),
        correct=int(row.correct),
        abs_error_sum=float(row.abs_error_sum),
        squared_error_sum=float(row.squared_error_sum),
        confusion=[list(cell) for cell in row.confusion],
        dropped={str(k): int(v) for k, v in dict(row.dropped).items()},
    )


class SqlAccuracyRepo(AccuracyRepo):
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def add(self, windows: Sequence[AccuracyWindow]) -> int:
        if not windows:
            return 0
        now = self._store.now()
        added = 0
        with self._store.write() as conn:
            stmt = _insert_ignore(conn).returning(_T.c.id)
            for w in windows:
                inserted = conn.execute(
                    stmt.values(
                        site=w.site,
                        window_id=w.window_id,
                        model=w.model,
                        version=w.version,
                        start_at=w.start_at,
                        end_at=w.end_at,
                        received_at=now,
                        kind=w.kind,
                        labels=w.labels,
                        correct=w.correct,
                        abs_error_sum=w.abs_error_sum,
                        squared_error_sum=w.squared_error_sum,
                        confusion=w.confusion,
                        dropped=w.dropped,
                    )
                ).first()
                added += inserted is not None
        return added

    def models(self) -> list[str]:
        with self._store.read() as conn:
            rows = conn.execute(select(_T.c.model).distinct().order_by(_T.c.model)).all()
        return [str(row[0]) for row in rows]

    def windows(
        self,
        *,
        model: str,
        version: int | None = None,
        site: str | None = None,
        since: datetime | None = None,
        limit: int = 100_000,
    ) -> list[AccuracyWindow]:
        query = select(_T).where(_T.c.model == model)
        if version is not None:
            query = query.where(_T.c.version == version)
        if site is not None:
            query = query.where(_T.c.site == site)
        if since is not None:
            query = query.where(_T.c.end_at >= since)
        query = query.order_by(_T.c.end_at.desc(), _T.c.id.desc()).limit(limit)
        with self._store.read() as conn:
            rows = conn.execute(query).all()
        return [_record(row) for row in reversed(rows)]

    def prune(self, before: datetime, *, chunk: int = 5000) -> int:
        if before.utcoffset() is None:
            raise InvalidInput("before must be timezone-aware")
        if chunk < 1:
            raise InvalidInput("chunk must be at least 1")
        gone = 0
        while True:  # short transactions: ingest keeps writing while a backlog goes
            with self._store.write() as conn:
                ids = select(_T.c.id).where(_T.c.end_at < before).order_by(_T.c.id).limit(chunk)
                deleted = int(
                    conn.execute(delete(_T).where(_T.c.id.in_(ids.scalar_subquery()))).rowcount
                )
            gone += deleted
            if deleted < chunk:
                return gone
