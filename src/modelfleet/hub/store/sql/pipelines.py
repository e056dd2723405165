"""Pipelines and their runs in SQL: the queries both backends share.

A run is claimed with an insert that ignores a conflict on its id (``ON CONFLICT DO
NOTHING`` on SQLite and PostgreSQL); a step is ``UPDATE ... WHERE id = :id AND state =
:expected``, so of two writers one moves it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from modelfleet.errors import InvalidInput, NotFound
from modelfleet.hub.store.records.pipelines import PipelineRecord, RunRecord
from modelfleet.hub.store.repos.pipelines import PipelineRepo
from modelfleet.hub.store.schema.pipelines import pipeline_runs, pipelines

if TYPE_CHECKING:
    from modelfleet.hub.store.sql.store import SqlStore

#: The columns a step may write besides ``state``.
_RUN_COLUMNS = frozenset(RunRecord.__dataclass_fields__) - {"id", "pipeline", "state"}


def _pipeline(row: Any) -> PipelineRecord:
    return PipelineRecord(
        name=row.name,
        model=row.model,
        spec=dict(row.spec),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _run(row: Any) -> RunRecord:
    return RunRecord(
        id=row.id,
        pipeline=row.pipeline,
        model=row.model,
        spec=dict(row.spec),
        state=row.state,
        started_by=row.started_by,
        job=row.job,
        candidate_version=row.candidate_version,
        production_version=row.production_version,
        evaluation=row.evaluation,
        candidate_score=row.candidate_score,
        production_score=row.production_score,
        promoted_version=row.promoted_version,
        message=row.message,
        started_at=row.started_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


class SqlPipelineRepo(PipelineRepo):
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def save_pipeline(self, record: PipelineRecord) -> PipelineRecord:
        values = dict(record.__dict__)
        with self._store.write() as conn:
            found = conn.execute(select(pipelines.c.name).where(pipelines.c.name == record.name))
            if found.first() is None:
                conn.execute(insert(pipelines).values(**values))
            else:
                conn.execute(
                    update(pipelines).where(pipelines.c.name == record.name).values(**values)
                )
        return self.get_pipeline(record.name)

    def get_pipeline(self, name: str) -> PipelineRecord:
        with self._store.read() as conn:
            row = conn.execute(select(pipelines).where(pipelines.c.name == name)).first()
        if row is None:
            raise NotFound(f"pipeline {name!r} does not exist (see `modelfleet pipeline ls`)")
        return _pipeline(row)

    def list_pipelines(self) -> list[PipelineRecord]:
        with self._store.read() as conn:
            rows = conn.execute(select(pipelines).order_by(pipelines.c.name)).all()
        return [_pipeline(r) for r in rows]

    def delete_pipeline(self, name: str) -> None:
        with self._store.write() as conn:
            gone = conn.execute(delete(pipelines).where(pipelines.c.name == name)).rowcount
            if not gone:
                raise NotFound(f"pipeline {name!r} does not exist (see `modelfleet pipeline ls`)")
            conn.execute(delete(pipeline_runs).where(pipeline_runs.c.pipeline == name))

    def create_run(self, record: RunRecord) -> tuple[RunRecord, bool]:
        with self._store.write() as conn:
            stmt = (
                pg_insert(pipeline_runs)
                if conn.dialect.name == "postgresql"
                else sqlite_insert(pipeline_runs)
            )
            row = conn.execute(
                stmt.values(**record.__dict__)
                .on_conflict_do_nothing(index_elements=["id"])
                .returning(pipeline_runs.c.id)
            ).first()
        return self.get_run(record.id), row is not None

    def get_run(self, run_id: str) -> RunRecord:
        with self._store.read() as conn:
            row = conn.execute(select(pipeline_runs).where(pipeline_runs.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"pipeline run {run_id!r} does not exist")
        return _run(row)

    def list_runs(
        self, pipeline: str | None = None, *, states: tuple[str, ...] = (), limit: int = 100
    ) -> list[RunRecord]:
        query = select(pipeline_runs)
        if pipeline is not None:
            query = query.where(pipeline_runs.c.pipeline == pipeline)
        if states:
            query = query.where(pipeline_runs.c.state.in_(states))
        query = query.order_by(pipeline_runs.c.started_at.desc(), pipeline_runs.c.id.desc())
        with self._store.read() as conn:
            rows = conn.execute(query.limit(limit)).all()
        return [_run(r) for r in rows]

    def transition(self, run_id: str, expected: str, state: str, **values: Any) -> bool:
        unknown = set(values) - _RUN_COLUMNS
        if unknown:
            raise InvalidInput(f"not a run column: {', '.join(sorted(unknown))}")
        with self._store.write() as conn:
            moved = conn.execute(
                update(pipeline_runs)
                .where(pipeline_runs.c.id == run_id, pipeline_runs.c.state == expected)
                .values(state=state, updated_at=self._store.now(), **values)
            ).rowcount
        return bool(moved)
