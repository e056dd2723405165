"""Models, versions and aliases in SQL: the query code both SQL backends share."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Row,
    Select,
    delete,
    exists,
    func,
    insert,
    select,
    tuple_,
    update,
)

from modelfleet.errors import NotFound
from modelfleet.hub.store.records.models import ModelRecord, NewVersion, VersionRecord
from modelfleet.hub.store.repos.models import ModelRepo, Resealer, Sealer
from modelfleet.hub.store.schema.models import aliases, models, versions
from modelfleet.hub.store.schema.sites import assignments, sites

if TYPE_CHECKING:
    from modelfleet.hub.store.sql.store import SqlStore


def _version_query() -> Select[Any]:
    return select(versions, models.c.name.label("model_name")).join(
        models, models.c.id == versions.c.model_id
    )


def _to_version(row: Row[Any]) -> VersionRecord:
    m = row._mapping
    return VersionRecord(
        model=m["model_name"],
        version=m["version"],
        digest=m["digest"],
        size=m["size"],
        io=dict(m["io"]),
        opset=m["opset"],
        framework=m["framework"],
        description=m["description"],
        metrics=dict(m["metrics"]),
        tags=dict(m["tags"]),
        training_regions=tuple(m["training_regions"]),
        parent_version=m["parent_version"],
        pushed_by=m["pushed_by"],
        created_at=m["created_at"],
        manifest=m["manifest"],
        signature=m["signature"],
    )


def _model_query() -> Select[Any]:
    stats = (
        select(
            versions.c.model_id,
            func.max(versions.c.version).label("latest"),
            func.count().label("n"),
        )
        .group_by(versions.c.model_id)
        .subquery()
    )
    return (
        select(models.c.id, models.c.name, models.c.created_at, stats.c.latest, stats.c.n)
        .outerjoin(stats, stats.c.model_id == models.c.id)
        .order_by(models.c.name)
    )


def _locked_model_id(conn: Connection, name: str) -> int | None:
    # FOR UPDATE serialises writers per model on PostgreSQL; SQLite renders no clause
    # and relies on its BEGIN IMMEDIATE database lock instead.
    query = select(models.c.id).where(models.c.name == name).with_for_update()
    model_id: int | None = conn.execute(query).scalar_one_or_none()
    return model_id


class SqlModelRepo(ModelRepo):
    """Versions are numbered under a lock on the model row, so numbers never collide."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def create_version(self, new: NewVersion, seal: Sealer) -> VersionRecord:
        with self._store.write() as conn:
            now = self._store.now()
            self._store.insert_model_if_absent(conn, new.model, now)
            model_id = _locked_model_id(conn, new.model)
            if model_id is None:  # only if the row vanished between the two statements
                raise NotFound(f"model {new.model!r} disappeared while adding a version")
            latest = conn.execute(
                select(func.coalesce(func.max(versions.c.version), 0)).where(
                    versions.c.model_id == model_id
                )
            ).scalar_one()
            number = int(latest) + 1
            if new.parent_version is not None and not _version_exists(
                conn, model_id, new.parent_version
            ):
                raise NotFound(f"parent version {new.model}:{new.parent_version} does not exist")
            # Inside the transaction: if sealing fails, the rollback also removes a model
            # row this call created, so a failed first push leaves nothing behind.
            manifest, signature = seal(number, now)
            conn.execute(
                insert(versions).values(
                    model_id=model_id,
                    version=number,
                    digest=new.digest,
                    size=new.size,
                    io=new.io,
                    opset=new.opset,
                    framework=new.framework,
                    description=new.description,
                    metrics=new.metrics,
                    tags=new.tags,
                    training_regions=list(new.training_regions),
                    parent_version=new.parent_version,
                    pushed_by=new.pushed_by,
                    created_at=now,
                    manifest=manifest,
                    signature=signature,
                )
            )
            # Read back rather than echo the input, so the caller gets exactly what a
            # later get_version returns (JSON round trip, timestamp precision).
            row = conn.execute(
                _version_query().where(
                    versions.c.model_id == model_id, versions.c.version == number
                )
            ).one()
            return _to_version(row)

    def get_model(self, name: str) -> ModelRecord | None:
        with self._store.read() as conn:
            found = _load_models(conn, name)
        return found[0] if found else None

    def list_models(self) -> list[ModelRecord]:
        with self._store.read() as conn:
            return _load_models(conn, None)

    def get_version(self, name: str, version: int) -> VersionRecord | None:
        query = _version_query().where(models.c.name == name, versions.c.version == version)
        with self._store.read() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _to_version(row)

    def list_versions(self, name: str) -> list[VersionRecord]:
        query = _version_query().where(models.c.name == name).order_by(versions.c.version)
        with self._store.read() as conn:
            return [_to_version(row) for row in conn.execute(query)]

    def set_alias(self, name: str, alias: str, version: int) -> None:
        with self._store.write() as conn:
            model_id = _locked_model_id(conn, name)
            if model_id is None:
                raise NotFound(f"model {name!r} does not exist")
            if not _version_exists(conn, model_id, version):
                raise NotFound(f"version {name}:{version} does not exist")
            # The model row lock makes update-then-insert race free.
            moved = conn.execute(
                update(aliases)
                .where(aliases.c.model_id == model_id, aliases.c.alias == alias)
                .values(version=version)
            )
            if moved.rowcount == 0:
                conn.execute(
                    insert(aliases).values(model_id=model_id, alias=alias, version=version)
                )

    def delete_alias(self, name: str, alias: str) -> bool:
        model_ids = select(models.c.id).where(models.c.name == name).scalar_subquery()
        stmt = delete(aliases).where(aliases.c.model_id == model_ids, aliases.c.alias == alias)
        with self._store.write() as conn:
            return conn.execute(stmt).rowcount > 0

    def resolve_alias(self, name: str, alias: str) -> int | None:
        query = (
            select(aliases.c.version)
            .join(models, models.c.id == aliases.c.model_id)
            .where(models.c.name == name, aliases.c.alias == alias)
        )
        with self._store.read() as conn:
            version: int | None = conn.execute(query).scalar_one_or_none()
        return version

    def digest_referenced(self, digest: str) -> bool:
        with self._store.read() as conn:
            return bool(conn.execute(select(exists().where(versions.c.digest == digest))).scalar())

    def reseal(self, reseal: Resealer) -> tuple[list[VersionRecord], list[str]]:
        changed: list[VersionRecord] = []
        keys: list[tuple[int, int]] = []
        query = _version_query().order_by(models.c.name, versions.c.version)
        with self._store.write() as conn:
            for row in conn.execute(query).all():
                record = _to_version(row)
                sealed = reseal(record)
                if sealed is None:
                    continue
                manifest, signature = sealed
                conn.execute(
                    update(versions)
                    .where(
                        versions.c.model_id == row.model_id, versions.c.version == record.version
                    )
                    .values(manifest=manifest, signature=signature)
                )
                changed.append(replace(record, manifest=manifest, signature=signature))
                keys.append((row.model_id, record.version))
            bumped: list[str] = []
            if keys:
                assigned = (
                    select(assignments.c.site_id)
                    .where(tuple_(assignments.c.model_id, assignments.c.version).in_(keys))
                    .distinct()
                )
                site_ids = [site_id for (site_id,) in conn.execute(assigned)]
                if site_ids:
                    conn.execute(
                        update(sites)
                        .where(sites.c.id.in_(site_ids))
                        .values(revision=sites.c.revision + 1)
                    )
                    bumped = sorted(
                        name
                        for (name,) in conn.execute(
                            select(sites.c.name).where(sites.c.id.in_(site_ids))
                        )
                    )
        return changed, bumped


def _version_exists(conn: Connection, model_id: int, version: int) -> bool:
    query = select(exists().where(versions.c.model_id == model_id, versions.c.version == version))
    return bool(conn.execute(query).scalar())


def _load_models(conn: Connection, name: str | None) -> list[ModelRecord]:
    query = _model_query()
    alias_query = select(aliases.c.model_id, aliases.c.alias, aliases.c.version)
    if name is not None:
        query = query.where(models.c.name == name)
        alias_query = alias_query.join(models, models.c.id == aliases.c.model_id).where(
            models.c.name == name
        )
    rows = conn.execute(query).all()
    by_model: dict[int, dict[str, int]] = {}
    for model_id, alias, version in conn.execute(alias_query.order_by(aliases.c.alias)):
        by_model.setdefault(model_id, {})[alias] = version
    return [
        ModelRecord(
            name=row.name,
            created_at=row.created_at,
            latest_version=row.latest or 0,
            version_count=row.n or 0,
            aliases=by_model.get(row.id, {}),
        )
        for row in rows
    ]
