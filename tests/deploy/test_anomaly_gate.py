"""The ``max_anomalies`` rollout gate on real telemetry: windows ingested as a site posts
them, the hub's anomaly service and gate source, the controller's verdict and progress."""

from __future__ import annotations

import math
import time
import uuid
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from modelfleet.hub.rollout.sources import TelemetryGateSource
from modelfleet.site.telemetry import TelemetryRecorder
from tests.deploy.test_controller import CANARY, World, first_version

FAST = {"bucket_s": 10, "warmup": 5, "history": 20}


def windows(version_of: Any, error_of: Any, end: float, count: int) -> list[dict[str, Any]]:
    """``count`` 10 s windows up to ``end`` from a site's recorder; window ``w`` is served
    by ``version_of(w)`` with error share ``error_of(w)``."""
    rng = np.random.default_rng(5)
    now = [0.0]
    closed: list[dict[str, Any]] = []
    recorder = TelemetryRecorder(closed.append, window_s=10.0, clock=lambda: now[0])
    first = math.floor(end / 10.0) * 10.0 - count * 10.0
    for w in range(count):
        for i in range(40):
            now[0] = first + w * 10.0 + i * 0.25
            failed = rng.random() < error_of(w)
            recorder.observe(
                model="pump", version=version_of(w), latency_s=0.002,
                outcome="error" if failed else "ok", batch_size=1, inputs=None, outputs=None,
            )  # fmt: skip
        now[0] = first + (w + 1) * 10.0
        recorder.flush()
    return closed


@pytest.fixture
def world(hub_factory: Any, tiny_onnx: Any) -> World:
    made = World(hub_factory(rollout_interval_s=3600), tiny_onnx)
    made.source = TelemetryGateSource(made.store, made.ctx.telemetry, made.ctx.anomalies)
    made.controller = made.new_controller()
    made.ctx.anomalies.set_settings("pump", FAST)
    return made


def test_an_anomaly_of_the_new_version_fails_the_wave(world: World) -> None:
    first_version(world)
    rid = world.deploy(2, **CANARY, gates={"max_anomalies": 0})
    # Site a served version 1 cleanly, then version 2 with 30 % of requests failing.
    # The last window ends 10-20 s ago, so the empty bucket after it never settles (ending
    # 20 s ago, it settled half the time and added a traffic drop, by the clock alone).
    shipped = windows(lambda w: 1 if w < 24 else 2, lambda w: 0.3 if w >= 24 else 0.0,
                      time.time() - 10, 30)  # fmt: skip
    world.ctx.telemetry.ingest("a", uuid.uuid4().hex, "s1", (0, 0), shipped)
    world.ctx.anomalies.refresh()  # the anomaly loop's next pass, without waiting for it
    found = world.ctx.anomalies.find(open_only=True)
    assert [(a.site, a.version, a.metric) for a in found] == [("a", 2, "error_rate")]
    progress = world.controller.view(world.controller.get(rid))["progress"]
    (check,) = [c for c in progress["gates"] if c["gate"] == "max_anomalies"]
    assert (check["value"], check["limit"], check["unit"]) == (1.0, 0.0, "anomalies")
    assert progress["verdict"] == "fail"
    r = world.run(rid, world.controller.get(rid).step_started_at, 1)
    assert r.state == "failed"
    assert r.history[-1]["gate"] == "max_anomalies"
    assert r.history[-1]["figures"]["anomalies"] == 1
    assert [world.assigned(s) for s in "abc"] == [1, 1, 1]


def test_no_open_anomaly_lets_the_wave_pass(world: World) -> None:
    first_version(world)
    rid = world.deploy(2, **CANARY, gates={"max_anomalies": 0})
    shipped = windows(lambda w: 1 if w < 24 else 2, lambda w: 0.0, time.time() - 10, 30)
    world.ctx.telemetry.ingest("a", uuid.uuid4().hex, "s1", (0, 0), shipped)
    world.ctx.anomalies.refresh()  # the anomaly loop's next pass, without waiting for it
    assert world.ctx.anomalies.find(open_only=True) == []
    start = world.controller.get(rid).step_started_at
    r = world.run(rid, start + timedelta(seconds=6), 0)
    assert (r.state, r.step) == ("running", 1)
