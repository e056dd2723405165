"""Maintenance outcomes with and without the fleet's models, from the demo's own answers.

Each request a plant line sends is one machine's process reading; the model answers "will
fail" or "fine", and later the plant learns the truth (the machine broke down, or not) — the
same labels it feeds back to its site. Without a model the plant runs machines to failure
(reactive maintenance): every failure is an unplanned breakdown. With the fleet's model a
predicted failure becomes a planned intervention; a wrong alarm costs an inspection; a
failure the model missed is still a breakdown.

The downtime figures need what an hour of each costs; the demo cannot measure that, so the
assumptions are named here, printed with the result and listed in the README's demo section. The
counts (caught, missed, false alarms) are measured; only the hours per event are assumed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from modelfleet.sim.demo.traffic import Answer

#: Hours a machine stands still after an unplanned breakdown (diagnosis, parts, repair).
BREAKDOWN_H = 8.0
#: Hours of a planned intervention when the model flags a failure before it happens.
PLANNED_H = 2.0
#: Hours lost inspecting a machine on a false alarm.
INSPECTION_H = 0.5


@dataclass(frozen=True)
class Outcome:
    """One plant's (or the fleet's) maintenance outcome over the answers it acted on."""

    answers: int
    failures: int
    caught: int
    missed: int
    false_alarms: int
    downtime_without_h: float  # reactive: every failure a breakdown
    downtime_with_h: float
    downtime_saved: float | None  # 1 - with / without; None without any failure

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def outcome(answers: Iterable[Answer]) -> Outcome:
    caught = missed = false_alarms = total = 0
    for a in answers:
        total += 1
        if a.truth == 1 and a.predicted == 1:
            caught += 1
        elif a.truth == 1:
            missed += 1
        elif a.predicted == 1:
            false_alarms += 1
    failures = caught + missed
    without = failures * BREAKDOWN_H
    with_model = caught * PLANNED_H + missed * BREAKDOWN_H + false_alarms * INSPECTION_H
    saved = 1.0 - with_model / without if without else None
    return Outcome(total, failures, caught, missed, false_alarms, without, with_model, saved)


def assumptions() -> dict[str, float]:
    return {"breakdown_h": BREAKDOWN_H, "planned_h": PLANNED_H, "inspection_h": INSPECTION_H}
