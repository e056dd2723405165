"""Open federated tasks, as every site's poll sees them: one shared, short-lived snapshot.

When a round opens, every selected site asks for its task at once (and each update post
asks again for the next one). Building each task body once and keeping who answered in
memory turns a burst of n x 4 queries into one snapshot. The coordinator drops it on
every change it makes and builds the new one before waking the sites; a short TTL covers
changes made through another hub replica.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

from modelfleet.federation.jobs import JobConfig
from modelfleet.federation.training import task_seed
from modelfleet.hub.store import FederationRepo
from modelfleet.hub.store.records import JobRow, RoundRow

#: Round weights up to this size are sent inside the task itself.
INLINE_WEIGHTS_BYTES = 256 * 1024
#: How long a snapshot of open tasks may serve polls (bounds staleness across replicas).
SNAPSHOT_TTL_S = 0.5

Snapshot = list[tuple[RoundRow, dict[str, Any], set[str]]]


class TaskBoard:
    """The open rounds with their task bodies and the sites that answered each."""

    def __init__(self, repo: FederationRepo) -> None:
        self.repo = repo
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._snapshot: tuple[float, Snapshot] | None = None

    def _fresh(self) -> Snapshot | None:
        with self._lock:
            if self._snapshot is not None and time.monotonic() < self._snapshot[0]:
                return self._snapshot[1]
        return None

    def open_tasks(self) -> Snapshot:
        """The current snapshot, built from the store if it is missing or stale."""
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        with self._build_lock:  # one thread builds; the rest of the burst reuses its work
            fresh = self._fresh()
            if fresh is not None:
                return fresh
            snapshot = []
            for rnd in self.repo.open_rounds():
                job = self.repo.get_job(rnd.job_id)
                answered = self.repo.answered(rnd.job_id, rnd.number)
                snapshot.append((rnd, self._task_body(job, rnd), answered))
            with self._lock:
                self._snapshot = (time.monotonic() + SNAPSHOT_TTL_S, snapshot)
            return snapshot

    def invalidate(self) -> None:
        with self._lock:
            self._snapshot = None

    def mark_answered(self, rnd: RoundRow, answered: set[str]) -> None:
        """Record answers stored through this process, so polls stop offering the task."""
        with self._lock:
            for cached, _, seen in self._snapshot[1] if self._snapshot else []:
                if (cached.job_id, cached.number) == (rnd.job_id, rnd.number):
                    seen.update(answered)

    def tasks_for(self, site: str) -> list[dict[str, Any]]:
        return _tasks_of(site, self.open_tasks())

    def cached_tasks_for(self, site: str) -> list[dict[str, Any]] | None:
        fresh = self._fresh()
        return None if fresh is None else _tasks_of(site, fresh)

    def _task_body(self, job: JobRow, rnd: RoundRow) -> dict[str, Any]:
        config = JobConfig.model_validate(job.config)
        base = f"/api/v1/federation/jobs/{job.id}/rounds/{rnd.number}"
        weights = self.repo.round_weights(job.id, rnd.number)
        task: dict[str, Any] = {}
        if len(weights) <= INLINE_WEIGHTS_BYTES:
            # Small models ride along with the task: one round trip less per round.
            task["weights"] = base64.b64encode(weights).decode()
        return task | {
            "job": job.id,
            "round": rnd.number,
            "attempt": rnd.attempt,
            "rounds": config.rounds,
            "model": job.model,
            "spec": job.spec,
            "data": config.data,
            "trainer": config.trainer,
            "kind": "personalize" if config.personalizes(rnd.number) else "train",
            "train": config.round_train_config(rnd.number).model_dump(mode="json"),
            "deadline_at": rnd.deadline_at.isoformat(),
            "weights_url": f"{base}/weights",
            "update_url": f"{base}/updates",
            "refusal_url": f"{base}/refusals",
        }


def _tasks_of(
    site: str, snapshot: list[tuple[RoundRow, dict[str, Any], set[str]]]
) -> list[dict[str, Any]]:
    return [
        body | {"seed": task_seed(rnd.job_id, rnd.number, site)}
        for rnd, body, answered in snapshot
        if site in rnd.selected and site not in answered
    ]
