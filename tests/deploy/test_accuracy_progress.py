"""The accuracy gates in a running rollout's progress (``GET /api/v1/rollouts/{id}``, what
``modelfleet rollout status`` prints): labels so far against those needed, each accuracy
figure next to its floor, from labels the hub ingested as sites ship them."""

from __future__ import annotations

import time
from typing import Any

import pytest

from modelfleet.api.rollouts import Rollout
from modelfleet.cli.rollout import progress_line
from tests.conftest import InProcessHub
from tests.deploy.test_controller import CANARY, World, first_version
from tests.hub.test_accuracy_gate import labelled, ship


@pytest.fixture
def hub(hub_factory: Any) -> InProcessHub:
    made: InProcessHub = hub_factory(rollout_interval_s=3600)  # the test drives nothing
    return made


def shown(hub: InProcessHub, rid: str) -> tuple[dict[str, dict[str, Any]], str]:
    """The rollout's gates by name as the API answers, and its plain status line."""
    answer = hub.client.get(f"/api/v1/rollouts/{rid}", headers=hub.headers())
    assert answer.status_code == 200, answer.text
    record = Rollout.model_validate(answer.json())
    assert record.progress is not None
    gates = {g.gate: g.model_dump() for g in record.progress.gates}
    return gates, progress_line(record)


def test_labels_and_accuracy_floors_are_shown_against_their_limits(
    hub: InProcessHub, tiny_onnx: Any
) -> None:
    world = World(hub, tiny_onnx)
    first_version(world)
    ship(world, "a", labelled(1, right=95, wrong=5))  # v1 at the canary site: 95 %
    gates = {"min_accuracy": 0.85, "min_accuracy_vs_previous": 0.02, "min_labels": 20}
    rid = world.deploy(2, **CANARY, gates=gates)

    before, line = shown(hub, rid)
    assert before["min_labels"]["limit"] == 20
    assert before["min_labels"]["state"] == "waiting"
    assert (before["min_accuracy"]["value"], before["min_accuracy"]["state"]) == (None, "waiting")
    assert "labels 0/20" in line

    time.sleep(0.01)  # the labels' windows end after the wave started
    ship(world, "a", labelled(2, right=90, wrong=10))  # v2: 90 %, 5 points down
    after, line = shown(hub, rid)
    assert (after["min_labels"]["value"], after["min_labels"]["state"]) == (100, "ok")
    floor = after["min_accuracy"]
    assert (floor["unit"], floor["value"], floor["limit"], floor["state"]) == (
        "fraction", 0.9, 0.85, "ok",
    )  # fmt: skip
    relative = after["min_accuracy_vs_previous"]
    assert relative["previous"] == 0.95
    assert relative["setting"] == 0.02
    assert relative["limit"] == pytest.approx(0.93)
    assert (relative["value"], relative["state"]) == (0.9, "breached")
    assert "labels 100/20" in line
    assert "accuracy 90.00% >= 85.00% ok" in line
    assert "accuracy vs previous 90.00% >= 93.00% (previous 95.00% - 2.00%) breached" in line


def test_a_gate_that_does_not_fit_the_labels_kind_waits_without_a_value(
    hub: InProcessHub, tiny_onnx: Any
) -> None:
    world = World(hub, tiny_onnx)
    first_version(world)
    rid = world.deploy(2, **CANARY, gates={"max_mae": 0.5, "min_labels": 5})
    time.sleep(0.01)
    ship(world, "a", labelled(2, right=9, wrong=1))  # a classifier's labels: no MAE
    gates, line = shown(hub, rid)
    mae = gates["max_mae"]
    assert (mae["unit"], mae["value"], mae["limit"], mae["state"]) == ("mae", None, 0.5, "waiting")
    assert "MAE - <= 0.5 waiting" in line
