"""Deployments that follow an alias: the alias moves, the deployment rolls out by itself.

A deployment made with ``follow`` (``modelfleet deploy NAME@ALIAS --follow``, or
``follow: true`` in a fleet file) remembers in its row the alias's version it last acted
on (``follow_version``). Each rollout controller tick — leader only, so one hub process
acts — compares that with where the alias points now; when they differ and no rollout of
the deployment is unfinished, it re-deploys the deployment's own ref with its kept
strategy, gates, selector and parameters, exactly as ``modelfleet deploy`` would.

Why it is safe to run on every tick, on every replica that becomes leader, after any crash:

* Nothing is held in memory: the trigger is the difference between two stored values.
* The start is a compare-and-set: the re-deploy is written only if the deployment row is
  still the one the tick read (``updated_at``), in the same transaction that refuses a
  second unfinished rollout. Two ticks or two replicas racing: one starts it, the other
  gets ``Conflict`` and does nothing.

:class:`~modelfleet.hub.rollout.follower.Follower` does the acting; this module holds the
view of where a following deployment stands (:func:`follow_state`). The rules, also in
``docs/deployments.md``:

* **A move while a rollout runs waits** (queue, latest wins): the running rollout finishes,
  fails or is aborted; then the deployment follows the alias's version *at that moment*.
  Versions the alias pointed at in between are skipped. A paused rollout holds the queue
  until an operator resumes, approves or aborts it.
* **A failed rollout is not retried**: the alias stays where the operator put it, the
  fleet stays on the last good version (the rollout moved its sites back), and the
  deployment's ``follow`` view says so. Only a new move of the alias — to another
  version, or away and back — or an explicit ``modelfleet deploy`` starts it again.
* A move the plan refuses (a residency rule, no online site) is noted on the deployment
  (``follow_note``) and likewise waits for the next move.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from modelfleet.hub.store.records import ACTIVE_STATES, DeploymentRecord, RolloutRecord
from modelfleet.refs import parse_ref

#: Who a rollout started by following is ``created_by`` (and ``rollout.started``'s ``by``).
FOLLOW_ACTOR = "follow"
#: Rollout states after which the fleet is back on the last good version.
_UNDONE = ("failed", "aborted", "rolled_back")

FollowStateName = Literal["following", "rolling_out", "queued", "blocked", "alias_missing"]


def awaiting_reason(wave: int, rollout_id: str) -> str:
    """The reason a rollout paused for approval shows: what it waits for, what to type."""
    return (
        f"awaiting approval before wave {wave}: approve with "
        f"`modelfleet rollout approve {rollout_id}`"
    )


@dataclass(frozen=True)
class FollowState:
    """Where a following deployment stands against its alias (``Deployment.follow``)."""

    alias: str
    #: Where the alias points now (None: the alias was removed).
    target_version: int | None
    #: The alias's version the deployment last acted on.
    acted_version: int | None
    #: What every selected site runs when no rollout moves them (the last good version).
    fleet_version: int | None
    state: FollowStateName
    #: The alias's version that did not roll out (failed, aborted, rolled back, refused).
    blocked_version: int | None
    reason: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _v(version: int | None) -> str:
    return f"v{version}" if version is not None else "no version"


def follow_state(
    record: DeploymentRecord, target: int | None, latest: RolloutRecord | None
) -> FollowState:
    """The follow view of ``record`` with its alias now at ``target``; ``latest`` is the
    deployment's newest rollout."""
    alias = parse_ref(record.ref).alias or ""
    fleet = record.stable_version
    acted = record.follow_version

    def state(
        name: FollowStateName, message: str, blocked: int | None = None, why: str = ""
    ) -> FollowState:
        return FollowState(
            alias, target, acted, fleet, name, blocked, why, f"following {alias}: {message}"
        )

    active = latest if latest is not None and latest.state in ACTIVE_STATES else None
    if target is None:
        return state("alias_missing", f"the alias is gone; fleet stays on {_v(fleet)}")
    if active is not None and target != active.to_version:
        return state(
            "queued",
            f"{_v(target)} waits for rollout {active.id} ({_v(active.to_version)}, "
            f"{active.state}) to end; intermediate versions are skipped",
        )
    if active is not None:
        return state(
            "rolling_out", f"rolling out {_v(target)} (rollout {active.id} {active.state})"
        )
    if target != acted:
        return state("queued", f"{_v(target)} starts at the controller's next tick")
    if record.follow_note:
        return state(
            "blocked",
            f"{_v(acted)} was refused ({record.follow_note}); fleet stays on {_v(fleet)}",
            acted,
            record.follow_note,
        )
    if (
        latest is not None
        and latest.to_version == acted
        and latest.state in _UNDONE
        and fleet != acted
    ):
        what = "failed" if latest.state == "failed" else latest.state.replace("_", " ")
        return state(
            "blocked",
            f"{_v(acted)} {what} in rollout {latest.id} ({latest.reason}); fleet stays on "
            f"{_v(fleet)}; it follows again when the alias moves",
            acted,
            latest.reason,
        )
    return state("following", f"fleet on {_v(fleet)}")
