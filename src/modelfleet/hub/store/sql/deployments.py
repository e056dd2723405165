"""Policies, deployments, per-site overrides and rollouts in SQL (both backends).

Rollout rows are changed only by compare-and-set: :meth:`SqlDeploymentRepo.transition`
updates a row only if its ``seq`` still equals what the caller read, bumps it, and can write
the owning deployment in the same transaction. A controller that crashed half way, a second
hub replica or an operator's ``rollout pause`` racing the controller therefore never apply a
decision made on stale state: the loser sees ``False`` and re-reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, delete, insert, select, update

from modelfleet.errors import Conflict, NotFound
from modelfleet.hub.store.records.deployments import (
    ACTIVE_STATES,
    DeploymentRecord,
    OverrideRecord,
    PolicyRecord,
    RolloutChange,
    RolloutRecord,
)
from modelfleet.hub.store.repos.deployments import DeploymentRepo
from modelfleet.hub.store.schema.deployments import deployments, overrides, policies, rollouts

if TYPE_CHECKING:
    from modelfleet.hub.store.sql.store import SqlStore


def _policy(row: Row[Any]) -> PolicyRecord:
    return PolicyRecord(row.name, row.kind, dict(row.spec), row.created_at, row.updated_at)


def _deployment(row: Row[Any]) -> DeploymentRecord:
    return DeploymentRecord(
        name=row.name,
        model=row.model,
        ref=row.ref,
        selector=row.selector,
        strategy=dict(row.strategy),
        gates=dict(row.gates),
        params=dict(row.params),
        target_version=row.target_version,
        stable_version=row.stable_version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        follow=bool(row.follow),
        follow_version=row.follow_version,
        follow_note=row.follow_note or "",
    )


def _rollout(row: Row[Any]) -> RolloutRecord:
    return RolloutRecord(
        id=row.id,
        deployment=row.deployment,
        model=row.model,
        from_version=row.from_version,
        to_version=row.to_version,
        state=row.state,
        step=row.step,
        step_started_at=row.step_started_at,
        plan=dict(row.plan),
        history=list(row.history),
        reason=row.reason,
        seq=row.seq,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SqlDeploymentRepo(DeploymentRepo):
    """The deployments feature's queries, on an existing :class:`SqlStore`."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    # --- policies ----------------------------------------------------------------------

    def put_policy(self, name: str, kind: str, spec: dict[str, Any]) -> tuple[PolicyRecord, bool]:
        """Create or replace a policy; the flag says whether anything changed."""
        now = self._store.now()
        with self._store.write() as conn:
            row = conn.execute(
                select(policies).where(policies.c.name == name).with_for_update()
            ).one_or_none()
            if row is None:
                conn.execute(
                    insert(policies).values(
                        name=name, kind=kind, spec=spec, created_at=now, updated_at=now
                    )
                )
                changed = True
            elif (row.kind, dict(row.spec)) != (kind, spec):
                conn.execute(
                    update(policies)
                    .where(policies.c.name == name)
                    .values(kind=kind, spec=spec, updated_at=now)
                )
                changed = True
            else:
                changed = False
            stored = conn.execute(select(policies).where(policies.c.name == name)).one()
            return _policy(stored), changed

    def delete_policy(self, name: str) -> None:
        with self._store.write() as conn:
            if conn.execute(delete(policies).where(policies.c.name == name)).rowcount == 0:
                raise NotFound(f"policy {name!r} does not exist")

    def list_policies(self) -> list[PolicyRecord]:
        with self._store.read() as conn:
            return [_policy(r) for r in conn.execute(select(policies).order_by(policies.c.name))]

    # --- deployments -------------------------------------------------------------------

    def get_deployment(self, name: str) -> DeploymentRecord | None:
        with self._store.read() as conn:
            row = conn.execute(select(deployments).where(deployments.c.name == name)).one_or_none()
        return None if row is None else _deployment(row)

    def list_deployments(self) -> list[DeploymentRecord]:
        with self._store.read() as conn:
            query = select(deployments).order_by(deployments.c.name)
            return [_deployment(r) for r in conn.execute(query)]

    def save_deployment(
        self,
        record: DeploymentRecord,
        rollout: RolloutRecord | None,
        *,
        expected_updated_at: datetime | None,
    ) -> None:
        """Create or update a deployment and start its rollout, atomically.

        ``expected_updated_at`` is the deployment's ``updated_at`` the caller planned
        against (None: it must not exist yet); a concurrent change makes this a
        ``Conflict``, as does an unfinished rollout of the same deployment.
        """
        values = {
            "model": record.model,
            "ref": record.ref,
            "selector": record.selector,
            "strategy": record.strategy,
            "gates": record.gates,
            "params": record.params,
            "target_version": record.target_version,
            "stable_version": record.stable_version,
            "updated_at": record.updated_at,
            "follow": record.follow,
            "follow_version": record.follow_version,
            "follow_note": record.follow_note,
        }
        with self._store.write() as conn:
            current = conn.execute(
                select(deployments.c.updated_at)
                .where(deployments.c.name == record.name)
                .with_for_update()
            ).one_or_none()
            if current is None and expected_updated_at is not None:
                raise Conflict(f"deployment {record.name!r} was removed meanwhile; plan again")
            if current is not None and current.updated_at != expected_updated_at:
                raise Conflict(f"deployment {record.name!r} changed meanwhile; plan again")
            busy = conn.execute(
                select(rollouts.c.id).where(
                    rollouts.c.deployment == record.name, rollouts.c.state.in_(ACTIVE_STATES)
                )
            ).first()
            if busy is not None and rollout is not None:
                raise Conflict(
                    f"deployment {record.name!r} has rollout {busy.id} in progress; "
                    f"promote, abort or roll it back first (`modelfleet rollout status {busy.id}`)"
                )
            if current is None:
                conn.execute(
                    insert(deployments).values(
                        name=record.name, created_at=record.created_at, **values
                    )
                )
            else:
                conn.execute(
                    update(deployments).where(deployments.c.name == record.name).values(**values)
                )
            if rollout is not None:
                conn.execute(insert(rollouts).values(**_rollout_values(rollout)))

    def record_follow(
        self, name: str, *, expected_updated_at: datetime, version: int, note: str
    ) -> bool:
        """Note that the deployment acted on its alias's ``version`` (``note``: why no
        rollout started), if the row is unchanged since read; False when it moved on."""
        with self._store.write() as conn:
            moved = conn.execute(
                update(deployments)
                .where(
                    deployments.c.name == name,
                    deployments.c.updated_at == expected_updated_at,
                )
                .values(follow_version=version, follow_note=note, updated_at=self._store.now())
            )
            return moved.rowcount == 1

    def delete_deployment(self, name: str) -> None:
        """Remove a deployment; its unfinished rollouts end as aborted."""
        now = self._store.now()
        with self._store.write() as conn:
            if conn.execute(delete(deployments).where(deployments.c.name == name)).rowcount == 0:
                raise NotFound(f"deployment {name!r} does not exist")
            conn.execute(
                update(rollouts)
                .where(rollouts.c.deployment == name, rollouts.c.state.in_(ACTIVE_STATES))
                .values(
                    state="aborted",
                    reason="deployment removed",
                    seq=rollouts.c.seq + 1,
                    updated_at=now,
                )
            )

    # --- overrides ---------------------------------------------------------------------

    def put_override(self, site: str, model: str, version: int, reason: str) -> bool:
        now = self._store.now()
        with self._store.write() as conn:
            row = conn.execute(
                select(overrides)
                .where(overrides.c.site == site, overrides.c.model == model)
                .with_for_update()
            ).one_or_none()
            if row is not None and (row.version, row.reason) == (version, reason):
                return False
            if row is not None:
                conn.execute(
                    update(overrides)
                    .where(overrides.c.site == site, overrides.c.model == model)
                    .values(version=version, reason=reason, created_at=now)
                )
            else:
                conn.execute(
                    insert(overrides).values(
                        site=site, model=model, version=version, reason=reason, created_at=now
                    )
                )
            return True

    def delete_override(self, site: str, model: str) -> None:
        with self._store.write() as conn:
            gone = conn.execute(
                delete(overrides).where(overrides.c.site == site, overrides.c.model == model)
            )
            if gone.rowcount == 0:
                raise NotFound(f"site {site!r} has no override for model {model!r}")

    def list_overrides(self, site: str | None = None) -> list[OverrideRecord]:
        query = select(overrides).order_by(overrides.c.site, overrides.c.model)
        if site is not None:
            query = query.where(overrides.c.site == site)
        with self._store.read() as conn:
            return [
                OverrideRecord(r.site, r.model, r.version, r.reason, r.created_at)
                for r in conn.execute(query)
            ]

    # --- rollouts ----------------------------------------------------------------------

    def get_rollout(self, rollout_id: str) -> RolloutRecord | None:
        with self._store.read() as conn:
            row = conn.execute(select(rollouts).where(rollouts.c.id == rollout_id)).one_or_none()
        return None if row is None else _rollout(row)

    def list_rollouts(
        self, *, states: tuple[str, ...] | None = None, deployment: str | None = None
    ) -> list[RolloutRecord]:
        query = select(rollouts).order_by(rollouts.c.created_at.desc(), rollouts.c.id)
        if states is not None:
            query = query.where(rollouts.c.state.in_(states))
        if deployment is not None:
            query = query.where(rollouts.c.deployment == deployment)
        with self._store.read() as conn:
            return [_rollout(r) for r in conn.execute(query)]

    def transition(self, rollout: RolloutRecord, change: RolloutChange) -> RolloutRecord | None:
        """Apply ``change`` if the row is still at ``rollout.seq``; None when it moved on."""
        values: dict[str, Any] = {"seq": rollout.seq + 1, "updated_at": self._store.now()}
        for key in ("state", "step", "step_started_at", "reason"):
            value = getattr(change, key)
            if value is not None:
                values[key] = value
        if change.history_entry is not None:
            values["history"] = [*rollout.history, change.history_entry]
        if change.extra:
            values["plan"] = {**rollout.plan, **change.extra}
        with self._store.write() as conn:
            moved = conn.execute(
                update(rollouts)
                .where(rollouts.c.id == rollout.id, rollouts.c.seq == rollout.seq)
                .values(**values)
            )
            if moved.rowcount != 1:
                return None
            if change.deployment_stable is not None:
                name, stable = change.deployment_stable
                conn.execute(
                    update(deployments)
                    .where(deployments.c.name == name)
                    .values(stable_version=stable, updated_at=values["updated_at"])
                )
            row = conn.execute(select(rollouts).where(rollouts.c.id == rollout.id)).one()
            return _rollout(row)


def _rollout_values(r: RolloutRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "deployment": r.deployment,
        "model": r.model,
        "from_version": r.from_version,
        "to_version": r.to_version,
        "state": r.state,
        "step": r.step,
        "step_started_at": r.step_started_at,
        "plan": r.plan,
        "history": r.history,
        "reason": r.reason,
        "seq": r.seq,
        "created_by": r.created_by,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    }
