"""Approval pauses: a rollout waits before a named wave until an operator approves.

A strategy's ``approval`` (see strategies.py) names the wave. When the wave before it
passes its gates, the controller does not move that wave's sites: the rollout goes to
``paused`` with its ``step`` on the waiting wave and ``plan.awaiting_approval`` set to its
number, so :meth:`RolloutRecord.moved_sites` leaves the wave's sites where they are. (Wave 1:
the rollout is created that way and no site moves before the approval.) Only
``rollout approve`` continues it — ``resume`` and ``promote`` are refused with the command
to type, so the approval cannot be skipped by accident — and ``abort`` or ``rollback``
still end it. Both steps are compare-and-set transitions of the row like every other, so
the pause survives restarts, and their events are derived from the row:
``rollout.awaiting_approval`` (once per rollout) and ``rollout.approved`` (from the
history entry ``approve``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from modelfleet.errors import Conflict
from modelfleet.hub.events import Events
from modelfleet.hub.rollout.follow import awaiting_reason
from modelfleet.hub.rollout.strategies import approval_wave, parse_strategy
from modelfleet.hub.store.records import RolloutChange, RolloutRecord


@dataclass(frozen=True)
class ApprovalView:
    """A rollout's approval (``Rollout.approval``): before which wave, whether it waits
    now, who approved it and when, and what to type."""

    wave: int
    awaiting: bool
    approved_by: str | None
    approved_at: str | None
    command: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pause_before(r: RolloutRecord, entry: dict[str, Any], now: datetime) -> RolloutChange | None:
    """The transition after the current wave passed, when the next one needs approval
    (None: it does not, and the rollout moves on as usual)."""
    wave = approval_wave(parse_strategy(r.plan.get("strategy")))
    following = r.step + 1  # the next step, from 0
    if wave is None or wave != following + 1 or following >= len(r.waves):
        return None
    return RolloutChange(
        state="paused",
        step=following,
        step_started_at=now,
        reason=awaiting_reason(wave, r.id),
        history_entry={**entry, "awaiting_approval": wave},
        extra={"awaiting_approval": wave},
    )


def approve(r: RolloutRecord, actor: str, now: datetime) -> RolloutChange:
    """The transition ``rollout approve`` makes: the waiting wave starts baking now."""
    if not r.awaiting_approval:
        raise Conflict(
            f"rollout {r.id} does not await approval (it is {r.state}, wave {r.step + 1})"
        )
    return RolloutChange(
        state="running",
        reason="",
        step_started_at=now,
        history_entry={"step": r.step, "outcome": "approve", "by": actor, "at": now.isoformat()},
        extra={"awaiting_approval": None},
    )


def refuse_while_awaiting(r: RolloutRecord, action: str) -> None:
    """``resume`` and ``promote`` do not skip an approval: ``Conflict`` saying what to type."""
    if r.awaiting_approval and action in ("resume", "promote"):
        raise Conflict(
            f"rollout {r.id} awaits approval before wave {r.step + 1}; approve it with "
            f"`modelfleet rollout approve {r.id}` (or abort it)"
        )


def approval_view(r: RolloutRecord) -> dict[str, Any] | None:
    """The rollout's approval as shown, or None when its strategy asks for none."""
    wave = approval_wave(parse_strategy(r.plan.get("strategy")))
    if wave is None:
        return None
    approved = next((h for h in r.history if h.get("outcome") == "approve"), None)
    return ApprovalView(
        wave=wave,
        awaiting=r.awaiting_approval,
        approved_by=approved.get("by") if approved else None,
        approved_at=approved.get("at") if approved else None,
        command=f"modelfleet rollout approve {r.id}",
    ).as_dict()


def announce(events: Events, r: RolloutRecord) -> None:
    """The approval events the row implies, each once (keyed)."""
    base = {
        "rollout": r.id,
        "deployment": r.deployment,
        "model": r.model,
        "from_version": r.from_version,
        "to_version": r.to_version,
    }
    if r.awaiting_approval:
        wave = int(r.plan.get("awaiting_approval") or r.step + 1)
        events.emit(
            "rollout.awaiting_approval",
            r.id,
            {
                **base,
                "wave": wave,
                "reason": r.reason,
                "command": f"modelfleet rollout approve {r.id}",
            },
            key=f"rollout/{r.id}/awaiting_approval/{wave}",
        )
    for index, entry in enumerate(r.history):
        if entry.get("outcome") == "approve":
            events.emit(
                "rollout.approved",
                r.id,
                {**base, "wave": int(entry.get("step", 0)) + 1, "by": entry.get("by")},
                key=f"rollout/{r.id}/history/{index}",
            )
