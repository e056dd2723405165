"""What operators see of a federated job (``fl status``, the jobs API)."""

from __future__ import annotations

from typing import Any

from modelfleet.hub.store import FederationRepo
from modelfleet.hub.store.records import JobRow


def job_view(repo: FederationRepo, job: JobRow, *, rounds: bool = True) -> dict[str, Any]:
    """The operator's picture of a job; with ``rounds``, per-round participants."""
    config = job.config
    out: dict[str, Any] = {
        "id": job.id,
        "model": job.model,
        "base_version": job.base_version,
        "state": job.state,
        "message": job.message,
        "round": job.current_round,
        "rounds": config.get("rounds"),
        "strategy": config.get("strategy"),
        "selector": config.get("sites") or "(all sites)",
        "data": config.get("data"),
        "min_sites": config.get("min_sites"),
        "result_version": job.result_version,
        "created_by": job.created_by,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "finished_at": job.finished_at,
        "sites": job.sites,
        "spec": job.spec,
        "config": config,
    }
    if rounds:
        updates: dict[int, list[dict[str, Any]]] = {}
        for u in repo.list_updates(job.id):
            updates.setdefault(u.round, []).append(
                {
                    "site": u.site,
                    "kind": u.kind,
                    "num_examples": u.num_examples,
                    "metrics": u.metrics,
                    "reason": u.reason,
                    "received_at": u.received_at,
                }
            )
        out["round_details"] = [
            {
                "round": r.number,
                "attempt": r.attempt,
                "state": r.state,
                "selected": r.selected,
                "opened_at": r.opened_at,
                "deadline_at": r.deadline_at,
                "closed_at": r.closed_at,
                "duration_s": (r.closed_at - r.opened_at).total_seconds() if r.closed_at else None,
                "metrics": r.metrics,
                "stragglers": r.outcome.get("stragglers", []),
                "dropped": r.outcome.get("dropped", {}),
                "reason": r.outcome.get("reason", ""),
                # The L2 bound applied to each delta (None: none) and the sites whose
                # claimed example counts were capped (site -> what it claimed).
                "clip_norm": r.outcome.get("clip_norm"),
                "examples_capped": r.outcome.get("examples_capped", {}),
                "updates": updates.get(r.number, []),
            }
            for r in repo.list_rounds(job.id)
        ]
    return out
