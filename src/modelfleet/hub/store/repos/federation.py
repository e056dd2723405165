"""The federation repository: federated jobs, their rounds, sites' answers and consent.

Every state change is a compare-and-set, so a retried request, a second hub replica or a
coordinator resumed after SIGKILL never applies a transition twice; an answer is keyed by
(job, round, site), which turns the sites' at-least-once delivery into exactly-once effect.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from modelfleet.hub.store.records.federation import JobRow, NewJob, RoundRow, UpdateRow


class FederationRepo(ABC):
    """What the federation coordinator persists."""

    @abstractmethod
    def now(self) -> datetime:
        """The store's clock: the one round deadlines are compared with."""

    # --- jobs ---------------------------------------------------------------------

    @abstractmethod
    def create_job(self, new: NewJob) -> JobRow:
        """Store a new running job at round 0. ``Conflict`` if the id is taken."""

    @abstractmethod
    def get_job(self, job_id: str) -> JobRow:
        """The job. ``NotFound`` if it does not exist."""

    @abstractmethod
    def list_jobs(self, states: Sequence[str] | None = None) -> list[JobRow]:
        """Jobs oldest first, optionally only those in ``states``."""

    @abstractmethod
    def job_weights(self, job_id: str) -> tuple[bytes, bytes | None]:
        """The job's current global weights and server-optimizer state (packed)."""

    @abstractmethod
    def transition(self, job_id: str, expected: Sequence[str], state: str, **values: Any) -> bool:
        """Move a job to ``state`` only if it is in one of ``expected``; False otherwise.

        A job that finishes (completed, failed, aborted) gets ``finished_at`` and loses
        every stored update payload: no site's own update outlives its job.
        """

    @abstractmethod
    def set_job_info(self, job_id: str, *, message: str, sites: dict[str, Any]) -> None:
        """Refresh what operators read about a running job (no state change)."""

    # --- rounds -------------------------------------------------------------------

    @abstractmethod
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
        """Open round ``number`` (or its next attempt after a failed one, forgetting that
        attempt's answers); None if the job moved on meanwhile (aborted, or another
        replica opened it)."""

    @abstractmethod
    def get_round(self, job_id: str, number: int) -> RoundRow:
        """The round. ``NotFound`` if the job has no such round."""

    @abstractmethod
    def list_rounds(self, job_id: str) -> list[RoundRow]:
        """The job's rounds in order."""

    @abstractmethod
    def open_rounds(self) -> list[RoundRow]:
        """Open rounds of running jobs: what sites may be working on now."""

    @abstractmethod
    def round_weights(self, job_id: str, number: int) -> bytes:
        """The global weights the round published. ``NotFound`` if no such round."""

    @abstractmethod
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
        """Close an open round as ``closed`` (advancing the job's weights and round, in
        the same transaction) or ``failed`` (too few updates; the job stays on this
        round). False if the round was not open at this attempt any more.

        Closing drops the round's update payloads unless ``keep_payloads``: once
        aggregated they are not needed, and one site's update says more about its data
        than the aggregate does. Counts and metrics stay for the job's history.
        """

    # --- updates ------------------------------------------------------------------

    @abstractmethod
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
        never folded into a later round;
        ``not_selected`` when the site was not selected for the round.
        """

    @abstractmethod
    def list_updates(self, job_id: str, number: int | None = None) -> list[UpdateRow]:
        """Answers ordered by round and site, without payloads."""

    @abstractmethod
    def iter_payloads(self, job_id: str, number: int) -> Iterator[tuple[UpdateRow, bytes]]:
        """The round's updates with their payloads, one at a time, so aggregation holds
        one payload in memory however many sites answered."""

    @abstractmethod
    def answered(self, job_id: str, number: int) -> set[str]:
        """Sites that answered the round (update or refusal)."""

    # --- consent ------------------------------------------------------------------

    @abstractmethod
    def set_consent(self, site: str, declaration: dict[str, Any]) -> None:
        """Replace what ``site`` declared about taking part."""

    @abstractmethod
    def consents(self) -> dict[str, dict[str, Any]]:
        """Every site's declaration."""
