"""Triggers through the service's public methods with an injected clock: drift at N sites
(real telemetry windows against a reference profile), a new version, an accuracy figure
below its floor (from a source implementing the ``AccuracySource`` protocol), the cooldown
that keeps a held condition from firing every pass, and one fire when two services see
the condition at once."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from modelfleet.api.schedules import TriggerIn
from modelfleet.errors import InvalidInput
from modelfleet.hub.actions import Actions
from modelfleet.hub.triggers import AccuracyFigure, AccuracySource, Triggers
from modelfleet.monitoring.profiles import profile_array
from tests.conftest import InProcessHub
from tests.monitoring.test_api_telemetry import enrolled_site
from tests.webhook_receiver import Receiver, receiver

T0 = datetime(2031, 1, 5, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


class Figures:
    """An AccuracySource the test fills."""

    def __init__(self) -> None:
        self.figures: list[AccuracyFigure] = []

    def latest(self, model: str) -> Sequence[AccuracyFigure]:
        return list(self.figures)


@pytest.fixture
def hub(hub_factory: Callable[..., InProcessHub], tiny_onnx: Callable[..., Path]) -> InProcessHub:
    made = hub_factory(schedule_interval_s=60.0)
    push(made, tiny_onnx())
    return made


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver(200) as rec:
        yield rec


def push(hub: InProcessHub, path: Path) -> None:
    hub.client.post(
        "/api/v1/models/pump/versions",
        content=path.read_bytes(),
        headers={**hub.headers(), "Content-Type": "application/octet-stream"},
    ).raise_for_status()


def triggers(hub: InProcessHub, clock: Clock, accuracy: AccuracySource | None = None) -> Triggers:
    ctx = hub.ctx
    return Triggers(
        ctx.store.schedules,
        ctx.events,
        Actions(ctx.federation, ctx.registry),
        ctx.registry,
        ctx.telemetry,
        ctx.anomalies,
        accuracy=accuracy,
        now=clock,
    )


def body(condition: dict, url: str, cooldown_s: float = 600) -> TriggerIn:
    return TriggerIn.model_validate(
        {
            "condition": condition,
            "action": {"kind": "hook", "url": url + "/hook", "secret": "s" * 20},
            "cooldown_s": cooldown_s,
        }
    )


def test_new_version_fires_once_per_version_after_its_cooldown(
    hub: InProcessHub, hook: Receiver, tiny_onnx: Callable[..., Path]
) -> None:
    clock = Clock(T0)
    t = triggers(hub, clock)
    t.save("on-push", body({"kind": "new_version", "model": "pump"}, hook.url), "tester")
    t.run_pass()
    assert hook.got == []  # version 1 was there before the trigger
    push(hub, tiny_onnx())
    clock.at += timedelta(seconds=5)
    t.run_pass()
    t.run_pass()
    assert len(hook.got) == 1
    sent = json.loads(hook.got[0]["body"])
    assert sent["kind"] == "trigger"
    assert "pump:2 registered" in sent["reason"]
    push(hub, tiny_onnx())  # version 3 during the cooldown: fires when it is over
    clock.at += timedelta(seconds=300)
    t.run_pass()
    assert len(hook.got) == 1
    clock.at += timedelta(seconds=301)
    t.run_pass()
    clock.at += timedelta(seconds=601)
    t.run_pass()  # nothing new since
    assert len(hook.got) == 2
    fires = t.fires("on-push")
    assert [f.state for f in fires] == ["fired", "fired"]
    view = t.get("on-push")
    assert view.fires == 2
    assert view.last_fire is not None
    fired = hub.ctx.events.repo.list_events(types=["trigger.fired"])
    assert [e.payload["result"]["state"] for e in fired] == ["fired", "fired"]


def test_accuracy_below_its_floor_at_enough_sites(hub: InProcessHub, hook: Receiver) -> None:
    clock = Clock(T0)
    figures = Figures()
    t = triggers(hub, clock, figures)
    condition = {"kind": "accuracy_below", "model": "pump", "floor": 0.9, "min_sites": 2,
                 "min_count": 50}  # fmt: skip
    t.save("accuracy", body(condition, hook.url), "tester")
    figures.figures = [
        AccuracyFigure("a", 1, "accuracy", 0.80, 500),
        AccuracyFigure("b", 1, "accuracy", 0.95, 500),
        AccuracyFigure("c", 1, "accuracy", 0.50, 10),  # too few labels to count
        AccuracyFigure("d", 1, "mae", 0.10, 500),  # another metric
    ]
    t.run_pass()
    assert hook.got == []
    figures.figures.append(AccuracyFigure("b", 2, "accuracy", 0.85, 80))
    t.run_pass()
    assert len(hook.got) == 1
    (fire,) = t.fires("accuracy")
    assert "accuracy below 0.9 at 2 site(s)" in fire.reason


def test_accuracy_is_refused_where_no_source_is_wired(hub: InProcessHub, hook: Receiver) -> None:
    t = triggers(hub, Clock(T0))
    with pytest.raises(InvalidInput, match="accuracy is not available on this hub"):
        t.save(
            "acc", body({"kind": "accuracy_below", "model": "pump", "floor": 0.9}, hook.url), "x"
        )


def test_a_held_condition_fires_once_when_two_services_see_it(
    hub: InProcessHub, hook: Receiver, tiny_onnx: Callable[..., Path]
) -> None:
    clock = Clock(T0)
    a, b = triggers(hub, clock), triggers(hub, clock)
    a.save("on-push", body({"kind": "new_version", "model": "pump"}, hook.url), "tester")
    push(hub, tiny_onnx())
    start = threading.Barrier(2)

    def judge(t: Triggers) -> None:
        start.wait()
        t.run_pass()

    threads = [threading.Thread(target=judge, args=(t,)) for t in (a, b)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert len(hook.got) == 1
    assert a.get("on-push").fires == 1


def _drift_window(shift: float, rng: np.random.Generator) -> dict:
    current = rng.normal(size=(1000, 2))
    current[:, 1] += shift
    now = time.time()
    return {
        "id": uuid.uuid4().hex, "model": "pump", "version": 1, "start": now - 5, "end": now,
        "requests": 200, "latency": {"4": 200},
        "inputs": profile_array(current).to_dict()["columns"], "outputs": {},
    }  # fmt: skip


def test_drift_at_enough_sites_fires_and_too_few_does_not(
    hub: InProcessHub, hook: Receiver
) -> None:
    rng = np.random.default_rng(5)
    reference = profile_array(rng.normal(size=(2000, 2)), labels=["temp", "flow"])
    hub.client.put(
        "/api/v1/models/pump/versions/1/reference-profile",
        json=reference.to_dict(),
        headers=hub.headers(),
    ).raise_for_status()
    for site, shift in (("plant-a", 2.0), ("plant-b", 2.0), ("plant-c", 0.0)):
        token = enrolled_site(hub, site)
        batch = {"batch_id": uuid.uuid4().hex, "spool_id": "s",
                 "windows": [_drift_window(shift, rng)]}  # fmt: skip
        hub.client.post(
            f"/api/v1/sites/{site}/telemetry", json=batch, headers=hub.headers(token)
        ).raise_for_status()
    t = triggers(hub, Clock(T0))
    t.save("three", body({"kind": "drift", "model": "pump", "min_sites": 3}, hook.url), "x")
    t.save("two", body({"kind": "drift", "model": "pump", "min_sites": 2}, hook.url), "x")
    t.run_pass()
    assert [json.loads(r["body"])["name"] for r in hook.got] == ["two"]
    (fire,) = t.fires("two")
    assert fire.reason == "drift on pump at 2 site(s) (needs 2): plant-a, plant-b"
    assert t.fires("three") == []
