"""Telemetry, reference profiles and drift settings in SQL (both backends).

Ingest is one transaction: the batch id is inserted first with ON CONFLICT DO NOTHING;
if it was already there the whole batch is a repeat and nothing else happens. Windows
are inserted the same way on (site, window id), so even a window that arrives in a
different batch is counted once. Two replicas racing on one batch serialise on the
primary key: the loser inserts nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Insert, Table, and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from modelfleet.crashpoints import crash_point
from modelfleet.errors import InvalidInput, NotFound
from modelfleet.hub.store.records.telemetry import IngestResult, NewWindow, Totals, WindowRecord
from modelfleet.hub.store.repos.telemetry import MAX_TOTAL, TelemetryRepo
from modelfleet.hub.store.schema.models import models, versions
from modelfleet.hub.store.schema.telemetry import (
    drift_settings,
    reference_profiles,
    telemetry_batches,
    telemetry_drops,
    telemetry_rollups,
    telemetry_windows,
)

if TYPE_CHECKING:
    from modelfleet.hub.store.sql.store import SqlStore


def _add_totals(a: Totals, b: Totals) -> Totals:
    return Totals(
        a.site,
        a.model,
        a.version,
        a.windows + b.windows,
        a.requests + b.requests,
        a.errors + b.errors,
        min(a.first_start, b.first_start),
        max(a.last_end, b.last_end),
    )


def _insert_ignore(conn: Connection, table: Table, keys: Sequence[str]) -> Insert:
    if conn.dialect.name == "postgresql":
        return pg_insert(table).on_conflict_do_nothing(index_elements=list(keys))
    return sqlite_insert(table).on_conflict_do_nothing(index_elements=list(keys))


def _model_id(conn: Connection, model: str, version: int | None = None) -> int:
    query = select(models.c.id).where(models.c.name == model)
    if version is not None:
        query = query.join(versions, versions.c.model_id == models.c.id).where(
            versions.c.version == version
        )
    model_id: int | None = conn.execute(query).scalar_one_or_none()
    if model_id is None:
        what = f"version {model}:{version}" if version is not None else f"model {model!r}"
        raise NotFound(f"{what} does not exist")
    return model_id


class SqlTelemetryRepo(TelemetryRepo):
    """Queries of the telemetry feature, on a :class:`SqlStore`'s transactions."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def ingest(
        self,
        site: str,
        batch_id: str,
        spool_id: str,
        dropped: tuple[int, int],
        windows: Sequence[NewWindow],
    ) -> IngestResult:
        now = self._store.now()
        with self._store.write() as conn:
            # RETURNING tells whether the row was inserted (rowcount is not reliable for
            # ON CONFLICT DO NOTHING on every driver).
            fresh = conn.execute(
                _insert_ignore(conn, telemetry_batches, ["site", "batch_id"])
                .values(site=site, batch_id=batch_id, received_at=now, windows=len(windows))
                .returning(telemetry_batches.c.batch_id)
            ).first()
            if fresh is None:
                return IngestResult(True, 0, len(windows))
            self._check_room(conn, site, windows)
            accepted = 0
            stmt = _insert_ignore(conn, telemetry_windows, ["site", "window_id"]).returning(
                telemetry_windows.c.id
            )
            for w in windows:
                inserted = conn.execute(
                    stmt.values(
                        site=site,
                        window_id=w.window_id,
                        model=w.model,
                        version=w.version,
                        start_at=w.start_at,
                        end_at=w.end_at,
                        received_at=now,
                        requests=w.requests,
                        errors=w.errors,
                        rows=w.rows,
                        latency_sum=w.latency_sum,
                        outcomes=w.outcomes,
                        latency=w.latency,
                        batch_sizes=w.batch_sizes,
                        profiles=w.profiles,
                    )
                ).first()
                accepted += inserted is not None
            # The batch row and its windows are written, the commit is not: a death here
            # must leave none of them (the site resends the batch and it counts once).
            crash_point("hub.ingest.mid_transaction")
            self._record_drops(conn, site, spool_id, dropped, now)
            return IngestResult(False, accepted, len(windows) - accepted)

    @staticmethod
    def _check_room(conn: Connection, site: str, windows: Sequence[NewWindow]) -> None:
        """Refuse the batch (rolling back its transaction) if it would take a total past
        ``MAX_TOTAL``. Counts every window, repeats included: near the bound, a resent
        window is refused too, which costs nothing real."""
        adding: dict[tuple[str, int], list[int]] = {}
        for window in windows:
            row = adding.setdefault((window.model, window.version), [0, 0])
            row[0] += window.requests
            row[1] += window.errors
        w, r = telemetry_windows.c, telemetry_rollups.c
        for (model, version), (requests, errors) in adding.items():
            if not requests and not errors:
                continue
            live = conn.execute(
                select(
                    func.coalesce(func.sum(w.requests), 0), func.coalesce(func.sum(w.errors), 0)
                ).where(w.site == site, w.model == model, w.version == version)
            ).one()
            rolled = conn.execute(
                select(r.requests, r.errors).where(
                    r.site == site, r.model == model, r.version == version
                )
            ).first() or (0, 0)
            if (
                int(live[0]) + int(rolled[0]) + requests > MAX_TOTAL
                or int(live[1]) + int(rolled[1]) + errors > MAX_TOTAL
            ):
                raise InvalidInput(
                    f"telemetry of {model}:{version} would total more than {MAX_TOTAL} "
                    f"requests or errors for site {site!r}"
                )

    def _record_drops(
        self, conn: Connection, site: str, spool_id: str, dropped: tuple[int, int], now: datetime
    ) -> None:
        windows, requests = dropped
        if windows <= 0 and requests <= 0:
            return
        conn.execute(
            _insert_ignore(conn, telemetry_drops, ["site", "spool_id"]).values(
                site=site, spool_id=spool_id, windows=0, requests=0, updated_at=now
            )
        )
        # Counters are cumulative at the site: keep the largest seen (batches may reorder).
        key = and_(telemetry_drops.c.site == site, telemetry_drops.c.spool_id == spool_id)
        conn.execute(
            update(telemetry_drops)
            .where(key, telemetry_drops.c.windows < windows)
            .values(windows=windows, updated_at=now)
        )
        conn.execute(
            update(telemetry_drops)
            .where(key, telemetry_drops.c.requests < requests)
            .values(requests=requests, updated_at=now)
        )

    def totals(self, site: str | None = None) -> list[Totals]:
        """Per (site, model, version): everything ever reported, exactly (the recent
        windows plus the roll-ups of deleted ones)."""
        w, r = telemetry_windows.c, telemetry_rollups.c
        live = select(
            w.site,
            w.model,
            w.version,
            func.count().label("windows"),
            func.sum(w.requests).label("requests"),
            func.sum(w.errors).label("errors"),
            func.min(w.start_at).label("first_start"),
            func.max(w.end_at).label("last_end"),
        ).group_by(w.site, w.model, w.version)
        rolled = select(
            r.site, r.model, r.version, r.windows, r.requests, r.errors, r.first_start, r.last_end
        )
        if site is not None:
            live, rolled = live.where(w.site == site), rolled.where(r.site == site)
        merged: dict[tuple[str, str, int], Totals] = {}
        with self._store.read() as conn:
            for row in [*conn.execute(rolled), *conn.execute(live)]:
                key = (row.site, row.model, int(row.version))
                part = Totals(
                    row.site,
                    row.model,
                    int(row.version),
                    int(row.windows),
                    int(row.requests or 0),
                    int(row.errors or 0),
                    row.first_start,
                    row.last_end,
                )
                merged[key] = _add_totals(merged[key], part) if key in merged else part
        return [merged[key] for key in sorted(merged)]

    def compact(self, before: datetime, *, chunk: int = 5000) -> int:
        """Fold windows that ended before ``before`` into the roll-ups and delete them,
        with batch ids received before it; returns how many windows were folded.

        Each chunk is one transaction that deletes the windows it counts (``DELETE ...
        RETURNING``): a window is counted exactly once even if another replica compacts
        at the same time or a late window arrives meanwhile.
        """
        w = telemetry_windows.c
        folded = 0
        while True:
            with self._store.write() as conn:
                ids = select(w.id).where(w.end_at < before).order_by(w.id).limit(chunk)
                gone = conn.execute(
                    delete(telemetry_windows)
                    .where(w.id.in_(ids.scalar_subquery()))
                    .returning(
                        w.site, w.model, w.version, w.requests, w.errors, w.start_at, w.end_at
                    )
                ).all()
                groups: dict[tuple[str, str, int], Totals] = {}
                for row in gone:
                    key = (row.site, row.model, int(row.version))
                    part = Totals(
                        *key, 1, int(row.requests), int(row.errors), row.start_at, row.end_at
                    )
                    groups[key] = _add_totals(groups[key], part) if key in groups else part
                for part in groups.values():
                    self._add_rollup(conn, part)
                if len(gone) < chunk:
                    conn.execute(
                        delete(telemetry_batches).where(telemetry_batches.c.received_at < before)
                    )
            folded += len(gone)
            if len(gone) < chunk:
                return folded

    @staticmethod
    def _add_rollup(conn: Connection, part: Totals) -> None:
        r = telemetry_rollups.c
        conn.execute(
            _insert_ignore(conn, telemetry_rollups, ["site", "model", "version"]).values(
                site=part.site,
                model=part.model,
                version=part.version,
                windows=0,
                requests=0,
                errors=0,
                first_start=part.first_start,
                last_end=part.last_end,
            )
        )
        key = and_(r.site == part.site, r.model == part.model, r.version == part.version)
        conn.execute(
            update(telemetry_rollups)
            .where(key)
            .values(
                windows=r.windows + part.windows,
                requests=r.requests + part.requests,
                errors=r.errors + part.errors,
            )
        )
        conn.execute(
            update(telemetry_rollups)
            .where(key, r.first_start > part.first_start)
            .values(first_start=part.first_start)
        )
        conn.execute(
            update(telemetry_rollups)
            .where(key, r.last_end < part.last_end)
            .values(last_end=part.last_end)
        )

    def windows_after(
        self,
        after_id: int,
        *,
        site: str | None = None,
        model: str | None = None,
        also: Sequence[int] = (),
        since: datetime | None = None,
        limit: int = 10_000,
    ) -> list[tuple[int, WindowRecord]]:
        w = telemetry_windows.c
        query = (
            select(
                w.id,
                w.site,
                w.model,
                w.version,
                w.start_at,
                w.end_at,
                w.requests,
                w.errors,
                w.rows,
                w.outcomes,
                w.latency,
                w.profiles,
            )
            .where(or_(w.id > after_id, w.id.in_(list(also))) if also else w.id > after_id)
            .order_by(w.id)
            .limit(max(1, limit))
        )
        if since is not None:
            query = query.where(w.end_at > since)
        if site is not None:
            query = query.where(w.site == site)
        if model is not None:
            query = query.where(w.model == model)
        with self._store.read() as conn:
            rows = conn.execute(query).all()
        return [
            (
                int(r.id),
                WindowRecord(
                    r.site,
                    r.model,
                    r.version,
                    r.start_at,
                    r.end_at,
                    int(r.requests),
                    int(r.errors),
                    int(r.rows),
                    dict(r.outcomes),
                    dict(r.latency),
                    dict(r.profiles),
                ),
            )
            for r in rows
        ]

    def max_window_id(self) -> int:
        with self._store.read() as conn:
            top = conn.execute(select(func.max(telemetry_windows.c.id))).scalar()
        return int(top or 0)

    def windows(
        self,
        *,
        site: str | None = None,
        model: str | None = None,
        version: int | None = None,
        since: datetime | None = None,
        with_profiles: bool = False,
    ) -> list[WindowRecord]:
        w = telemetry_windows.c
        columns = [
            w.site, w.model, w.version, w.start_at, w.end_at, w.requests, w.errors, w.rows,
            w.outcomes, w.latency,
        ]  # fmt: skip
        if with_profiles:
            columns.append(w.profiles)
        query = select(*columns)
        if site is not None:
            query = query.where(w.site == site)
        if model is not None:
            query = query.where(w.model == model)
        if version is not None:
            query = query.where(w.version == version)
        if since is not None:
            query = query.where(w.end_at > since)
        with self._store.read() as conn:
            rows = conn.execute(query.order_by(w.end_at)).all()
        return [
            WindowRecord(
                r.site,
                r.model,
                r.version,
                r.start_at,
                r.end_at,
                int(r.requests),
                int(r.errors),
                int(r.rows),
                dict(r.outcomes),
                dict(r.latency),
                dict(r.profiles) if with_profiles else None,
            )
            for r in rows
        ]

    def drops(self) -> dict[str, tuple[int, int]]:
        """Per site: windows and requests its outboxes dropped, summed over outboxes."""
        d = telemetry_drops.c
        query = select(d.site, func.sum(d.windows), func.sum(d.requests)).group_by(d.site)
        with self._store.read() as conn:
            return {site: (int(ws or 0), int(rs or 0)) for site, ws, rs in conn.execute(query)}

    def set_reference(self, model: str, version: int, profile: dict[str, Any], by: str) -> None:
        now = self._store.now()
        with self._store.write() as conn:
            model_id = _model_id(conn, model, version)
            key = and_(
                reference_profiles.c.model_id == model_id, reference_profiles.c.version == version
            )
            changed = conn.execute(
                update(reference_profiles)
                .where(key)
                .values(profile=profile, uploaded_by=by, uploaded_at=now)
            ).rowcount
            if changed == 0:
                conn.execute(
                    reference_profiles.insert().values(
                        model_id=model_id,
                        version=version,
                        profile=profile,
                        uploaded_by=by,
                        uploaded_at=now,
                    )
                )

    def get_reference(self, model: str, version: int) -> dict[str, Any] | None:
        query = (
            select(reference_profiles.c.profile)
            .join(models, models.c.id == reference_profiles.c.model_id)
            .where(models.c.name == model, reference_profiles.c.version == version)
        )
        with self._store.read() as conn:
            profile = conn.execute(query).scalar_one_or_none()
        return None if profile is None else dict(profile)

    def set_drift_settings(self, model: str, thresholds: dict[str, float]) -> None:
        now = self._store.now()
        with self._store.write() as conn:
            model_id = _model_id(conn, model)
            changed = conn.execute(
                update(drift_settings)
                .where(drift_settings.c.model_id == model_id)
                .values(thresholds=thresholds, updated_at=now)
            ).rowcount
            if changed == 0:
                conn.execute(
                    drift_settings.insert().values(
                        model_id=model_id, thresholds=thresholds, updated_at=now
                    )
                )

    def get_drift_settings(self, model: str) -> dict[str, float]:
        query = (
            select(drift_settings.c.thresholds)
            .join(models, models.c.id == drift_settings.c.model_id)
            .where(models.c.name == model)
        )
        with self._store.read() as conn:
            found = conn.execute(query).scalar_one_or_none()
        return {} if found is None else {str(k): float(v) for k, v in dict(found).items()}
