"""A rollout's waves as ``rollout status``, the API and the dashboard show them."""

from __future__ import annotations

from typing import Any

from modelfleet.hub.store.records import RolloutRecord


def waves_view(r: RolloutRecord, reported: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each wave: its status, its sites with the version they ran before and what they
    report now (``reported``: site -> the rollout's model as the site reports it), and the
    latest decision on it."""
    previous = r.plan.get("previous", {})
    waves = []
    for index, wave in enumerate(r.waves):
        decided = [h for h in r.history if h.get("step") == index]
        waves.append(
            {
                "index": index + 1,
                "status": wave_status(r, index),
                "sites": [
                    {
                        "site": site,
                        "previous": previous.get(site),
                        "active_version": reported.get(site, {}).get("active_version"),
                        "state": reported.get(site, {}).get("state"),
                        "error": reported.get(site, {}).get("error"),
                    }
                    for site in wave
                ],
                "decision": decided[-1] if decided else None,
            }
        )
    return waves


def wave_status(r: RolloutRecord, index: int) -> str:
    """``done``, ``baking``, ``paused``, ``awaiting approval``, ``pending``, ``rolled back``
    or ``never moved``."""
    if r.state == "succeeded":
        return "done"
    if r.state in ("failed", "aborted", "rolled_back"):
        return "rolled back" if index <= r.step else "never moved"
    if index < r.step:
        return "done"
    if index == r.step and r.awaiting_approval:
        return "awaiting approval"
    if index == r.step:
        return "baking" if r.state == "running" else "paused"
    return "pending"
