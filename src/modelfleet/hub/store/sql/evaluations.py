"""Evaluations in SQL: the queries both backends share (see repos/evaluations.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from modelfleet.errors import Conflict, NotFound
from modelfleet.hub.store.records.evaluations import AnswerRow, EvaluationRow
from modelfleet.hub.store.repos.evaluations import EvaluationRepo
from modelfleet.hub.store.schema.evaluations import evaluation_answers, evaluations

if TYPE_CHECKING:
    from modelfleet.hub.store.sql.store import SqlStore


def _row(row: Any) -> EvaluationRow:
    return EvaluationRow(
        id=row.id,
        model=row.model,
        versions=[int(v) for v in row.versions],
        refs=[str(r) for r in row.refs],
        selector=row.selector,
        metric=row.metric,
        min_samples=row.min_samples,
        data=row.data,
        rows=row.rows,
        sites={str(k): dict(v) for k, v in dict(row.sites).items()},
        state=row.state,
        winner=row.winner,
        message=row.message,
        deadline_at=row.deadline_at,
        created_by=row.created_by,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def _answer(row: Any) -> AnswerRow:
    return AnswerRow(
        evaluation_id=row.evaluation_id,
        site=row.site,
        kind=row.kind,
        scores=dict(row.scores),
        reason=row.reason,
        at=row.at,
    )


class SqlEvaluationRepo(EvaluationRepo):
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def now(self) -> datetime:
        return self._store.now()

    def create(self, row: EvaluationRow) -> EvaluationRow:
        with self._store.write() as conn:
            try:
                conn.execute(
                    insert(evaluations).values(
                        id=row.id,
                        model=row.model,
                        versions=list(row.versions),
                        refs=list(row.refs),
                        selector=row.selector,
                        metric=row.metric,
                        min_samples=row.min_samples,
                        data=row.data,
                        rows=row.rows,
                        sites=row.sites,
                        state=row.state,
                        winner=row.winner,
                        message=row.message,
                        deadline_at=row.deadline_at,
                        created_by=row.created_by,
                        created_at=row.created_at,
                        finished_at=row.finished_at,
                    )
                )
            except IntegrityError as exc:
                raise Conflict(f"evaluation {row.id!r} already exists") from exc
        return self.get(row.id)

    def get(self, evaluation_id: str) -> EvaluationRow:
        with self._store.read() as conn:
            row = conn.execute(
                select(*evaluations.c).where(evaluations.c.id == evaluation_id)
            ).first()
        if row is None:
            raise NotFound(f"no evaluation {evaluation_id!r} (see `GET /api/v1/evaluations`)")
        return _row(row)

    def list_evaluations(
        self,
        *,
        model: str | None = None,
        states: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[EvaluationRow]:
        query = select(*evaluations.c)
        if model is not None:
            query = query.where(evaluations.c.model == model)
        if states is not None:
            query = query.where(evaluations.c.state.in_(list(states)))
        query = query.order_by(evaluations.c.created_at.desc(), evaluations.c.id.desc())
        with self._store.read() as conn:
            rows = conn.execute(query.limit(limit)).all()
        return [_row(r) for r in rows]

    def put_answer(
        self, evaluation_id: str, site: str, kind: str, scores: dict[str, Any], reason: str
    ) -> bool:
        a = evaluation_answers.c
        with self._store.write() as conn:
            found = conn.execute(
                select(a.site).where(a.evaluation_id == evaluation_id, a.site == site)
            ).first()
            if found is not None:
                return False
            try:
                conn.execute(
                    insert(evaluation_answers).values(
                        evaluation_id=evaluation_id,
                        site=site,
                        kind=kind,
                        scores=scores,
                        reason=reason,
                        at=self._store.now(),
                    )
                )
            except IntegrityError:  # the same site's retry, committed in between
                return False
        return True

    def answers(self, evaluation_id: str) -> list[AnswerRow]:
        a = evaluation_answers.c
        with self._store.read() as conn:
            rows = conn.execute(
                select(*evaluation_answers.c)
                .where(a.evaluation_id == evaluation_id)
                .order_by(a.site)
            ).all()
        return [_answer(r) for r in rows]

    def finish(self, evaluation_id: str, state: str, *, winner: int | None, message: str) -> bool:
        with self._store.write() as conn:
            moved = conn.execute(
                update(evaluations)
                .where(evaluations.c.id == evaluation_id, evaluations.c.state == "running")
                .values(
                    state=state,
                    winner=winner,
                    message=message,
                    finished_at=self._store.now(),
                )
            )
            return bool(moved.rowcount)
