"""The deployments repository: policies, deployments, per-site overrides and rollouts.

Rollouts change only by compare-and-set (:meth:`DeploymentRepo.transition`): a decision
made on a row that has moved on since it was read is refused, whoever made it — the
controller after a crash, a second hub replica, an operator's ``rollout pause``.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any

from modelfleet.hub.store.records.deployments import (
    DeploymentRecord,
    OverrideRecord,
    PolicyRecord,
    RolloutChange,
    RolloutRecord,
)


class DeploymentRepo(ABC):
    """What the deployments service and the rollout controller persist."""

    # --- policies ----------------------------------------------------------------------

    @abstractmethod
    def put_policy(self, name: str, kind: str, spec: dict[str, Any]) -> tuple[PolicyRecord, bool]:
        """Create or replace a policy; the flag says whether anything changed."""

    @abstractmethod
    def delete_policy(self, name: str) -> None:
        """Remove a policy. ``NotFound`` if it does not exist."""

    @abstractmethod
    def list_policies(self) -> list[PolicyRecord]:
        """All policies, ordered by name."""

    # --- deployments -------------------------------------------------------------------

    @abstractmethod
    def get_deployment(self, name: str) -> DeploymentRecord | None: ...

    @abstractmethod
    def list_deployments(self) -> list[DeploymentRecord]:
        """All deployments, ordered by name."""

    @abstractmethod
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

    @abstractmethod
    def record_follow(
        self, name: str, *, expected_updated_at: datetime, version: int, note: str
    ) -> bool:
        """Note that a following deployment acted on its alias's ``version`` without a
        rollout (``note`` says why none started), as a compare-and-set on ``updated_at``;
        False when the row changed since the caller read it."""

    @abstractmethod
    def delete_deployment(self, name: str) -> None:
        """Remove a deployment; its unfinished rollouts end as aborted. ``NotFound`` if
        absent."""

    # --- overrides ---------------------------------------------------------------------

    @abstractmethod
    def put_override(self, site: str, model: str, version: int, reason: str) -> bool:
        """Pin ``site`` to ``model:version``; False if exactly that pin was already there."""

    @abstractmethod
    def delete_override(self, site: str, model: str) -> None:
        """Remove a pin. ``NotFound`` if the site has none for the model."""

    @abstractmethod
    def list_overrides(self, site: str | None = None) -> list[OverrideRecord]:
        """Pins ordered by site and model; only ``site``'s when given."""

    # --- rollouts ----------------------------------------------------------------------

    @staticmethod
    def new_rollout_id() -> str:
        """A fresh rollout id, short enough to type (``r-`` and 8 hex digits)."""
        return "r-" + secrets.token_hex(4)

    @abstractmethod
    def get_rollout(self, rollout_id: str) -> RolloutRecord | None: ...

    @abstractmethod
    def list_rollouts(
        self, *, states: tuple[str, ...] | None = None, deployment: str | None = None
    ) -> list[RolloutRecord]:
        """Rollouts newest first, optionally only in ``states`` or of one deployment."""

    @abstractmethod
    def transition(self, rollout: RolloutRecord, change: RolloutChange) -> RolloutRecord | None:
        """Apply ``change`` if the row is still at ``rollout.seq`` (bumping it, and writing
        the deployment's stable version in the same transaction when the change names
        one); None when the row moved on, and the caller re-reads."""
