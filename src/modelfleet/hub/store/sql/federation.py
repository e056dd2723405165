"""Federated jobs, rounds, updates and site consent in SQL: the queries both backends share.

Every state change is a compare-and-set inside one transaction (``UPDATE ... WHERE state
= expected``), so a retried request, a second hub replica or a coordinator resumed after
SIGKILL can never apply a transition twice: closing a round writes the round's outcome,
the job's new global weights and its optimizer state together or not at all. An update
row is keyed by (job, round, site), which turns at-least-once delivery from the sites
into exactly-once effect.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from modelfleet.errors import Conflict, InvalidInput, NotFound
from modelfleet.hub.store.records.federation import JobRow, NewJob, RoundRow, UpdateRow
from modelfleet.hub.store.repos.federation import FederationRepo
from modelfleet.hub.store.schema.federation import fl_consent, fl_jobs, fl_rounds, fl_updates

if TYPE_CHECKING:
    from modelfleet.hub.store.sql.store import SqlStore

_JOB_COLUMNS = tuple(c for c in fl_jobs.c if c.name not in ("weights", "strategy_state"))
_ROUND_COLUMNS = tuple(c for c in fl_rounds.c if c.name != "weights")
_UPDATE_COLUMNS = tuple(c for c in fl_updates.c if c.name != "payload")


def _drop_payloads(conn: Connection, job_id: str, number: int | None = None) -> None:
    stmt = update(fl_updates).where(
        fl_updates.c.job_id == job_id, fl_updates.c.payload.is_not(None)
    )
    if number is not None:
        stmt = stmt.where(fl_updates.c.round == number)
    conn.execute(stmt.values(payload=None))


def _job(row: Any) -> JobRow:
    return JobRow(
        id=row.id,
        model=row.model,
        base_version=row.base_version,
        spec=dict(row.spec),
        config=dict(row.config),
        state=row.state,
        current_round=row.current_round,
        sites=dict(row.sites),
        message=row.message,
        result_version=row.result_version,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


def _round(row: Any) -> RoundRow:
    return RoundRow(
        job_id=row.job_id,
        number=row.number,
        attempt=row.attempt,
        state=row.state,
        selected=list(row.selected),
        opened_at=row.opened_at,
        deadline_at=row.deadline_at,
        closed_at=row.closed_at,
        metrics=dict(row.metrics),
        outcome=dict(row.outcome),
    )


def _update(row: Any) -> UpdateRow:
    return UpdateRow(
        job_id=row.job_id,
        round=row.round,
        site=row.site,
        attempt=row.attempt,
        kind=row.kind,
        num_examples=row.num_examples,
        metrics=dict(row.metrics),
        reason=row.reason,
        received_at=row.received_at,
    )


class SqlFederationRepo(FederationRepo):
    """The federation feature's persistence, over any :class:`SqlStore`."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def now(self) -> datetime:
        return self._store.now()

    # --- jobs ---------------------------------------------------------------------

    def create_job(self, new: NewJob) -> JobRow:
        now = self._store.now()
        with self._store.write() as conn:
            try:
                conn.execute(
                    insert(fl_jobs).values(
                        id=new.id,
                        model=new.model,
                        base_version=new.base_version,
                        spec=new.spec,
                        config=new.config,
                        state="running",
                        current_round=0,
                        weights=new.weights,
                        strategy_state=None,
                        sites=new.sites,
                        message="",
                        result_version=None,
                        created_by=new.created_by,
                        created_at=now,
                        updated_at=now,
                        finished_at=None,
                    )
                )
            except IntegrityError as exc:
                raise Conflict(f"federated job {new.id!r} already exists") from exc
            return self._load_job(conn, new.id)

    def _load_job(self, conn: Connection, job_id: str) -> JobRow:
        row = conn.execute(select(*_JOB_COLUMNS).where(fl_jobs.c.id == job_id)).one_or_none()
        if row is None:
            raise NotFound(f"federated job {job_id!r} does not exist (see `modelfleet fl ls`)")
        return _job(row)

    def get_job(self, job_id: str) -> JobRow:
        with self._store.read() as conn:
            return self._load_job(conn, job_id)

    def list_jobs(self, states: Sequence[str] | None = None) -> list[JobRow]:
        query = select(*_JOB_COLUMNS).order_by(fl_jobs.c.created_at, fl_jobs.c.id)
        if states is not None:
            query = query.where(fl_jobs.c.state.in_(list(states)))
        with self._store.read() as conn:
            return [_job(row) for row in conn.execute(query)]

    def job_weights(self, job_id: str) -> tuple[bytes, bytes | None]:
        """The job's current global weights and server-optimizer state (packed)."""
        query = select(fl_jobs.c.weights, fl_jobs.c.strategy_state).where(fl_jobs.c.id == job_id)
        with self._store.read() as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            raise NotFound(f"federated job {job_id!r} does not exist")
        return bytes(row.weights), None if row.strategy_state is None else bytes(row.strategy_state)

    def transition(self, job_id: str, expected: Sequence[str], state: str, **values: Any) -> bool:
        """Move a job to ``state`` only if it is in one of ``expected``; False otherwise."""
        now = self._store.now()
        extra = dict(values)
        if state in ("completed", "failed", "aborted"):
            extra.setdefault("finished_at", now)
        stmt = (
            update(fl_jobs)
            .where(fl_jobs.c.id == job_id, fl_jobs.c.state.in_(list(expected)))
            .values(state=state, updated_at=now, **extra)
        )
        with self._store.write() as conn:
            moved: bool = conn.execute(stmt).rowcount == 1
            if moved and state in ("completed", "failed", "aborted"):
                _drop_payloads(conn, job_id)  # no site's own update outlives its job
            return moved

    def set_job_info(self, job_id: str, *, message: str, sites: dict[str, Any]) -> None:
        """Refresh what operators read about a running job (no state change)."""
        stmt = (
            update(fl_jobs)
            .where(fl_jobs.c.id == job_id)
            .values(message=message, sites=sites, updated_at=self._store.now())
        )
        with self._store.write() as conn:
            conn.execute(stmt)

    # --- rounds -------------------------------------------------------------------

    def open_round(
        self,
        job_id: str,
        number: int,
        *,
        selected: list[str],
        weights: bytes,
        deadline_at: datetime,
        sites: dict[str, Any],
    ) -> RoundRow | None:
        """Open round ``number`` (or its next attempt after a failed one); None if the
        job moved on meanwhile (aborted, or another replica opened it)."""
        now = self._store.now()
        with self._store.write() as conn:
            job = conn.execute(
                select(fl_jobs.c.state, fl_jobs.c.current_round)
                .where(fl_jobs.c.id == job_id)
                .with_for_update()
            ).one_or_none()
            if job is None or job.state != "running" or job.current_round != number - 1:
                return None
            existing = conn.execute(
                select(fl_rounds.c.state, fl_rounds.c.attempt).where(
                    fl_rounds.c.job_id == job_id, fl_rounds.c.number == number
                )
            ).one_or_none()
            if existing is not None and existing.state != "failed":
                return None
            attempt = 1 if existing is None else existing.attempt + 1
            values: dict[str, Any] = {
                "attempt": attempt,
                "state": "open",
                "selected": selected,
                "weights": weights,
                "opened_at": now,
                "deadline_at": deadline_at,
                "closed_at": None,
                "metrics": {},
                "outcome": {},
            }
            conn.execute(
                delete(fl_updates).where(
                    fl_updates.c.job_id == job_id, fl_updates.c.round == number
                )
            )
            if existing is None:
                conn.execute(insert(fl_rounds).values(job_id=job_id, number=number, **values))
            else:
                conn.execute(
                    update(fl_rounds)
                    .where(fl_rounds.c.job_id == job_id, fl_rounds.c.number == number)
                    .values(**values)
                )
            conn.execute(
                update(fl_jobs)
                .where(fl_jobs.c.id == job_id)
                .values(sites=sites, message="", updated_at=now)
            )
            row = conn.execute(
                select(*_ROUND_COLUMNS).where(
                    fl_rounds.c.job_id == job_id, fl_rounds.c.number == number
                )
            ).one()
            return _round(row)

    def get_round(self, job_id: str, number: int) -> RoundRow:
        query = select(*_ROUND_COLUMNS).where(
            fl_rounds.c.job_id == job_id, fl_rounds.c.number == number
        )
        with self._store.read() as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            raise NotFound(f"federated job {job_id!r} has no round {number}")
        return _round(row)

    def list_rounds(self, job_id: str) -> list[RoundRow]:
        query = (
            select(*_ROUND_COLUMNS).where(fl_rounds.c.job_id == job_id).order_by(fl_rounds.c.number)
        )
        with self._store.read() as conn:
            return [_round(row) for row in conn.execute(query)]

    def open_rounds(self) -> list[RoundRow]:
        """Open rounds of running jobs: what sites may be working on now."""
        query = (
            select(*_ROUND_COLUMNS)
            .join(fl_jobs, fl_jobs.c.id == fl_rounds.c.job_id)
            .where(fl_rounds.c.state == "open", fl_jobs.c.state == "running")
            .order_by(fl_rounds.c.opened_at)
        )
        with self._store.read() as conn:
            return [_round(row) for row in conn.execute(query)]

    def round_weights(self, job_id: str, number: int) -> bytes:
        query = select(fl_rounds.c.weights).where(
            fl_rounds.c.job_id == job_id, fl_rounds.c.number == number
        )
        with self._store.read() as conn:
            data = conn.execute(query).scalar_one_or_none()
        if data is None:
            raise NotFound(f"federated job {job_id!r} has no round {number}")
        return bytes(data)

    def close_round(
        self,
        job_id: str,
        number: int,
        attempt: int,
        *,
        state: str,
        metrics: dict[str, Any],
        outcome: dict[str, Any],
        weights: bytes | None = None,
        strategy_state: bytes | None = None,
        keep_payloads: bool = False,
    ) -> bool:
        """Close an open round as ``closed`` (advancing the job's weights and round) or
        ``failed`` (too few updates; the job stays on this round). False if the round was
        not open at this attempt any more.

        Closing drops the round's update payloads (each site's delta) in the same
        transaction unless ``keep_payloads``: once aggregated they are not needed, and
        individual updates say more about a site's data than the aggregate does. Counts
        and metrics stay for the job's history."""
        now = self._store.now()
        with self._store.write() as conn:
            changed = conn.execute(
                update(fl_rounds)
                .where(
                    fl_rounds.c.job_id == job_id,
                    fl_rounds.c.number == number,
                    fl_rounds.c.attempt == attempt,
                    fl_rounds.c.state == "open",
                )
                .values(state=state, closed_at=now, metrics=metrics, outcome=outcome)
            )
            if changed.rowcount != 1:
                return False
            if state == "closed":
                if weights is None:
                    raise InvalidInput("closing a round needs the new global weights")
                conn.execute(
                    update(fl_jobs)
                    .where(fl_jobs.c.id == job_id, fl_jobs.c.current_round == number - 1)
                    .values(
                        current_round=number,
                        weights=weights,
                        strategy_state=strategy_state,
                        updated_at=now,
                    )
                )
                if not keep_payloads:
                    _drop_payloads(conn, job_id, number)
            return True

    # --- updates ------------------------------------------------------------------

    def put_update(
        self,
        job_id: str,
        number: int,
        attempt: int,
        site: str,
        *,
        kind: str,
        num_examples: int = 0,
        metrics: dict[str, Any] | None = None,
        payload: bytes | None = None,
        reason: str = "",
    ) -> tuple[bool, RoundRow, set[str]]:
        """Record a site's answer: ``(new, round, sites that answered so far)``; ``new`` is
        False if this site had already answered (also once the round has closed: a retry
        of an answer the round counted is acknowledged, not refused).

        ``Conflict`` with code ``round_closed`` when the round (or this attempt of it)
        is no longer open and this site's answer is not in it: a late update is refused,
        never folded into a later round.
        """
        with self._store.write() as conn:
            row = conn.execute(
                select(*_ROUND_COLUMNS)
                .where(fl_rounds.c.job_id == job_id, fl_rounds.c.number == number)
                .with_for_update()
            ).one_or_none()
            if row is None:
                raise NotFound(f"federated job {job_id!r} has no round {number}")
            current = _round(row)
            if current.state != "open" or current.attempt != attempt:
                if self._has_answered(conn, job_id, number, attempt, site, kind):
                    # A retry of an answer stored before the hub died (or before the reply
                    # reached the site): it counted, so the site must not be told otherwise.
                    # Only the same kind: an update does not make a late refusal welcome.
                    return False, current, self._answered(conn, job_id, number)
                raise Conflict(
                    f"round {number} of job {job_id!r} is closed; late update refused",
                    code="round_closed",
                )
            if site not in current.selected:
                raise Conflict(
                    f"site {site!r} was not selected for round {number} of job {job_id!r}",
                    code="not_selected",
                )
            answered = self._answered(conn, job_id, number)
            if site in answered:
                return False, current, answered
            conn.execute(
                insert(fl_updates).values(
                    job_id=job_id,
                    round=number,
                    site=site,
                    attempt=attempt,
                    kind=kind,
                    num_examples=num_examples,
                    metrics=metrics or {},
                    payload=payload,
                    reason=reason,
                    received_at=self._store.now(),
                )
            )
            return True, current, answered | {site}

    def list_updates(self, job_id: str, number: int | None = None) -> list[UpdateRow]:
        query = select(*_UPDATE_COLUMNS).where(fl_updates.c.job_id == job_id)
        if number is not None:
            query = query.where(fl_updates.c.round == number)
        query = query.order_by(fl_updates.c.round, fl_updates.c.site)
        with self._store.read() as conn:
            return [_update(row) for row in conn.execute(query)]

    def iter_payloads(self, job_id: str, number: int) -> Iterator[tuple[UpdateRow, bytes]]:
        """The round's updates, streamed from one query row by row, so only one payload
        is in memory at a time however many sites answered."""
        query = (
            select(*_UPDATE_COLUMNS, fl_updates.c.payload)
            .where(
                fl_updates.c.job_id == job_id,
                fl_updates.c.round == number,
                fl_updates.c.kind == "update",
            )
            .order_by(fl_updates.c.site)
            .execution_options(yield_per=1)
        )
        with self._store.read() as conn:
            for row in conn.execute(query):
                if row.payload is not None:
                    yield _update(row), bytes(row.payload)

    def answered(self, job_id: str, number: int) -> set[str]:
        with self._store.read() as conn:
            return self._answered(conn, job_id, number)

    @staticmethod
    def _has_answered(
        conn: Connection, job_id: str, number: int, attempt: int, site: str, kind: str
    ) -> bool:
        """Whether the round holds this site's answer of this kind at this attempt."""
        query = select(fl_updates.c.site).where(
            fl_updates.c.kind == kind,
            fl_updates.c.job_id == job_id,
            fl_updates.c.round == number,
            fl_updates.c.attempt == attempt,
            fl_updates.c.site == site,
        )
        return conn.execute(query).first() is not None

    @staticmethod
    def _answered(conn: Connection, job_id: str, number: int) -> set[str]:
        query = select(fl_updates.c.site).where(
            fl_updates.c.job_id == job_id, fl_updates.c.round == number
        )
        return {site for (site,) in conn.execute(query)}

    # --- consent ------------------------------------------------------------------

    def set_consent(self, site: str, declaration: dict[str, Any]) -> None:
        now = self._store.now()
        with self._store.write() as conn:
            changed = conn.execute(
                update(fl_consent)
                .where(fl_consent.c.site == site)
                .values(declaration=declaration, updated_at=now)
            )
            if changed.rowcount == 0:
                conn.execute(
                    insert(fl_consent).values(site=site, declaration=declaration, updated_at=now)
                )

    def consents(self) -> dict[str, dict[str, Any]]:
        with self._store.read() as conn:
            rows = conn.execute(select(fl_consent.c.site, fl_consent.c.declaration))
            return {row.site: dict(row.declaration) for row in rows}
