"""What operators see of a federated job (``fl status``, the jobs API)."""

from __future__ import annotations

from typing import Any

from modelfleet.hub.store import FederationRepo
from modelfleet.hub.store.records import JobRow

#: How many left-out sites a waiting message names before it says "and N more".
_NAMED = 5


def waiting_message(sites: dict[str, dict[str, Any]], selector: str, need: int) -> str:
    """Why a round cannot open yet, in one line an operator can act on: which sites the
    selector matched and why each is left out (no consent, no such data set, offline...).
    Written into the job at submission, so ``fl start`` says it at once instead of the
    round waiting ``wait_for_sites_s`` in silence."""
    eligible = sum(1 for info in sites.values() if info["status"] == "eligible")
    head = f"waiting for sites: {eligible} eligible online, need {need}"
    if not sites:
        where = f"the selector {selector!r}" if selector else "the fleet"
        return f"{head}; {where} has no site (modelfleet site ls)"
    left_out = [
        (name, info) for name, info in sorted(sites.items()) if info["status"] != "eligible"
    ]
    named = "; ".join(
        f"{name} {info['status']}: {info['reason']}" for name, info in left_out[:_NAMED]
    )
    more = f"; and {len(left_out) - _NAMED} more" if len(left_out) > _NAMED else ""
    return f"{head}; left out: {named}{more}"


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
