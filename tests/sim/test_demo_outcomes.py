"""The demo's maintenance outcomes: counts from answers, hours from the named assumptions."""

from __future__ import annotations

import pytest

from modelfleet.sim.demo.outcomes import BREAKDOWN_H, INSPECTION_H, PLANNED_H, outcome
from modelfleet.sim.demo.traffic import Answer


def _answer(predicted: int, truth: int) -> Answer:
    return Answer(
        request_id="r", site="plant", version="1", predicted=predicted, truth=truth, at=0.0
    )


def test_counts_and_downtime_follow_the_answers() -> None:
    answers = [_answer(1, 1)] * 3 + [_answer(0, 1)] * 2 + [_answer(1, 0)] * 4 + [_answer(0, 0)] * 5
    o = outcome(answers)
    assert (o.answers, o.failures, o.caught, o.missed, o.false_alarms) == (14, 5, 3, 2, 4)
    assert o.downtime_without_h == 5 * BREAKDOWN_H
    assert o.downtime_with_h == 3 * PLANNED_H + 2 * BREAKDOWN_H + 4 * INSPECTION_H
    assert o.downtime_saved == pytest.approx(1 - o.downtime_with_h / o.downtime_without_h)


def test_no_failures_means_no_saving_to_claim() -> None:
    o = outcome([_answer(1, 0), _answer(0, 0)])
    assert o.failures == 0
    assert o.false_alarms == 1
    assert o.downtime_saved is None
