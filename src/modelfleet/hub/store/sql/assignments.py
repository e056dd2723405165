"""Each site's assignments in SQL: the desired state both backends share.

Every change takes the site row's lock (:func:`~modelfleet.hub.store.sql.sites.locked_site`)
before it bumps the site's revision, so an agent long-polling on the revision never misses a
change nor sees half of one, and concurrent writers to one site are serialised.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Select, and_, delete, insert, select, update

from modelfleet.errors import InvalidInput, NotFound
from modelfleet.hub.store.records.sites import Assignment
from modelfleet.hub.store.repos.sites import AssignmentItem, AssignmentRepo
from modelfleet.hub.store.schema.models import models, versions
from modelfleet.hub.store.schema.sites import assignments, sites
from modelfleet.hub.store.sql.sites import locked_site

if TYPE_CHECKING:
    from modelfleet.hub.store.sql.store import SqlStore


def _bump(
    conn: Connection, site_id: int, revision: int, decommissioned_at: datetime | None = None
) -> int:
    """The next revision; every change of a site's assignments puts it in service again
    (``decommissioned_at`` None) but a decommission itself."""
    # Safe as read-modify-write: the caller holds the site row lock.
    conn.execute(
        update(sites)
        .where(sites.c.id == site_id)
        .values(revision=revision + 1, decommissioned_at=decommissioned_at)
    )
    return revision + 1


def _model_version_id(conn: Connection, model: str, version: int) -> int:
    query = (
        select(models.c.id)
        .join(versions, versions.c.model_id == models.c.id)
        .where(models.c.name == model, versions.c.version == version)
    )
    model_id: int | None = conn.execute(query).scalar_one_or_none()
    if model_id is None:
        raise NotFound(f"version {model}:{version} does not exist")
    return model_id


def _assignment_query() -> Select[Any]:
    return (
        select(
            sites.c.name.label("site"),
            models.c.name.label("model"),
            assignments.c.version,
            assignments.c.ref,
            assignments.c.params,
            versions.c.digest,
            assignments.c.assigned_at,
            assignments.c.floor,
        )
        .select_from(assignments)
        .join(sites, sites.c.id == assignments.c.site_id)
        .join(models, models.c.id == assignments.c.model_id)
        .join(
            versions,
            and_(
                versions.c.model_id == assignments.c.model_id,
                versions.c.version == assignments.c.version,
            ),
        )
    )


def _floor(old: Any, version: int) -> int | None:
    """The floor a (re)assignment of ``version`` keeps: the highest version assigned while
    the row lasted, NULL when that is ``version`` itself."""
    if old is None:
        return None
    highest = max(old.version, old.floor or 0)
    return highest if highest > version else None


class SqlAssignmentRepo(AssignmentRepo):
    """One row per (site, model): a site serves at most one version of each model."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def set(self, site: str, model: str, version: int, ref: str, params: dict[str, Any]) -> int:
        with self._store.write() as conn:
            site_id, revision = locked_site(conn, site)
            model_id = _model_version_id(conn, model, version)
            # The site row lock makes read-then-write race free.
            old = conn.execute(
                select(assignments.c.version, assignments.c.floor).where(
                    assignments.c.site_id == site_id, assignments.c.model_id == model_id
                )
            ).one_or_none()
            values = {
                "version": version,
                "ref": ref,
                "params": params,
                "assigned_at": self._store.now(),
                "floor": _floor(old, version),
            }
            moved = conn.execute(
                update(assignments)
                .where(assignments.c.site_id == site_id, assignments.c.model_id == model_id)
                .values(**values)
            )
            if moved.rowcount == 0:
                conn.execute(
                    insert(assignments).values(site_id=site_id, model_id=model_id, **values)
                )
            return _bump(conn, site_id, revision)

    def remove(self, site: str, model: str) -> int:
        model_ids = select(models.c.id).where(models.c.name == model).scalar_subquery()
        with self._store.write() as conn:
            site_id, revision = locked_site(conn, site)
            removed = conn.execute(
                delete(assignments).where(
                    assignments.c.site_id == site_id, assignments.c.model_id == model_ids
                )
            )
            if removed.rowcount == 0:
                raise NotFound(f"model {model!r} is not assigned to site {site!r}")
            return _bump(conn, site_id, revision)

    def replace(self, site: str, items: Sequence[AssignmentItem]) -> int:
        models_seen = [model for model, _, _, _ in items]
        duplicates = sorted({m for m in models_seen if models_seen.count(m) > 1})
        if duplicates:
            raise InvalidInput(f"models assigned more than once: {', '.join(duplicates)}")
        with self._store.write() as conn:
            site_id, revision = locked_site(conn, site)
            now = self._store.now()
            current = {
                row.model_id: row
                for row in conn.execute(select(assignments).where(assignments.c.site_id == site_id))
            }
            rows = []
            for model, version, ref, params in items:
                model_id = _model_version_id(conn, model, version)
                old = current.get(model_id)
                unchanged = old is not None and (old.version, old.ref, old.params) == (
                    version,
                    ref,
                    params,
                )
                rows.append(
                    {
                        "site_id": site_id,
                        "model_id": model_id,
                        "version": version,
                        "ref": ref,
                        "params": params,
                        # An untouched assignment keeps the time it was really made.
                        "assigned_at": old.assigned_at if old is not None and unchanged else now,
                        "floor": _floor(old, version),
                    }
                )
            conn.execute(delete(assignments).where(assignments.c.site_id == site_id))
            if rows:
                conn.execute(insert(assignments), rows)
            return _bump(conn, site_id, revision)

    def decommission(self, site: str) -> int:
        with self._store.write() as conn:
            site_id, revision = locked_site(conn, site)
            conn.execute(delete(assignments).where(assignments.c.site_id == site_id))
            return _bump(conn, site_id, revision, decommissioned_at=self._store.now())

    def revision(self, site: str) -> int:
        with self._store.read() as conn:
            revision: int | None = conn.execute(
                select(sites.c.revision).where(sites.c.name == site)
            ).scalar_one_or_none()
        if revision is None:
            raise NotFound(f"site {site!r} does not exist")
        return revision

    def all_revisions(self) -> dict[str, int]:
        with self._store.read() as conn:
            rows = conn.execute(select(sites.c.name, sites.c.revision))
            return {row.name: int(row.revision) for row in rows}

    def site_has_digest(self, site: str, digest: str) -> bool:
        query = _assignment_query().where(sites.c.name == site, versions.c.digest == digest)
        with self._store.read() as conn:
            return bool(conn.execute(select(query.exists())).scalar())

    def sites_with_model(self, model: str) -> list[str]:
        query = (
            select(sites.c.name)
            .join(assignments, assignments.c.site_id == sites.c.id)
            .join(models, models.c.id == assignments.c.model_id)
            .where(models.c.name == model)
            .order_by(sites.c.name)
        )
        with self._store.read() as conn:
            return [name for (name,) in conn.execute(query)]

    def list(self, site: str) -> list[Assignment]:
        query = _assignment_query().where(sites.c.name == site).order_by(models.c.name)
        with self._store.read() as conn:
            return [
                Assignment(
                    site=row.site,
                    model=row.model,
                    version=row.version,
                    ref=row.ref,
                    params=dict(row.params),
                    digest=row.digest,
                    assigned_at=row.assigned_at,
                    downgrade=row.floor is not None and row.floor > row.version,
                )
                for row in conn.execute(query)
            ]
