"""``model.registered``, ``anomaly.opened`` / ``anomaly.closed`` and ``drift.flagged`` /
``drift.cleared`` from a real hub process, with windows posted as a site posts them: each
change is one event with its payload, told by the hub's background pass (nobody reads the
anomalies or the drift), and a restarted hub does not tell any of them again."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelfleet.api.events import Event
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.monitoring.profiles import profile_array
from modelfleet.sim.launcher import HubProcess
from modelfleet.site.telemetry import TelemetryRecorder
from tests.hub.test_anomalies_api import FAST, WINDOW_S, Hub, enroll, post
from tests.waiting import wait_for

QUICK = {
    "MODELFLEET_HUB_ANOMALY_INTERVAL_S": "1",
    "MODELFLEET_HUB_DRIFT_CHECK_INTERVAL_S": "1",
}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    init = init_hub(tmp_path / "hub")
    process = HubProcess(tmp_path / "hub", tls=False, extra_env=QUICK).start()
    admin = HubClient(process.url, init.admin_token)
    try:
        yield Hub(process, admin, init.admin_token)
    finally:
        admin.close()
        process.stop()


def windows(
    first: float, count: int, *, burst: range = range(0), shift: float = 0.0
) -> list[dict[str, Any]]:
    """``count`` closed 10 s windows from ``first`` (epoch s) made by the site's own
    recorder; in the windows of ``burst`` 30 % of requests fail; inputs move by ``shift``."""
    rng = np.random.default_rng(int(first) % 1000)
    now = [0.0]
    closed: list[dict[str, Any]] = []
    recorder = TelemetryRecorder(closed.append, window_s=WINDOW_S, clock=lambda: now[0])
    for w in range(count):
        start = first + w * WINDOW_S
        for i in range(40):
            now[0] = start + i * WINDOW_S / 40
            failed = w in burst and rng.random() < 0.3
            x = (rng.normal(size=(1, 2)) + shift).astype(np.float32)
            recorder.observe(
                model="pump", version=1, latency_s=float(rng.lognormal(-6, 0.2)),
                outcome="error" if failed else "ok", batch_size=1, inputs={"X": x},
                outputs=None if failed else {"Y": x.sum(axis=1)},
            )  # fmt: skip
        now[0] = start + WINDOW_S
        recorder.flush()
    return closed


def told(hub: Hub, family: str) -> list[Event]:
    return hub.admin.list_events(types=[family], limit=1000)


def restart_and_let_it_pass(hub: Hub) -> None:
    """Kill the hub, start it, and wait for two of its background passes."""
    hub.process.kill()
    hub.process.start()
    first: list[Any] = []

    def passed_twice() -> bool:
        at = hub.admin.anomalies()["passed_at"]
        if at is not None and not first:
            first.append(at)
        return at is not None and bool(first) and at != first[0]

    # The second pass's time shows the first pass ended, with its announcements and its
    # drift check (the first check of a process always runs).
    wait_for(passed_twice, "two passes of the restarted hub", timeout=30)


def test_a_pushed_version_is_registered_once(hub: Hub, tiny_onnx) -> None:
    pushed = hub.admin.push(
        tiny_onnx(features=2),
        "pump",
        alias="candidate",
        tags={"git_sha": "0123abc"},
        metrics={"accuracy": 0.91},
        training_regions=["eu-west"],
    )
    event, moved = told(hub, "model.*")  # the alias the push set is told after the version
    assert (moved.type, moved.subject) == ("model.alias_moved", "pump@candidate")
    assert (moved.payload["from_version"], moved.payload["to_version"]) == (None, 1)
    assert (event.type, event.subject) == ("model.registered", "pump:1")
    assert event.payload["model"] == "pump"
    assert event.payload["version"] == pushed["version"] == 1
    assert event.payload["digest"] == pushed["digest"]
    assert event.payload["alias"] == "candidate"
    assert event.payload["tags"] == {"git_sha": "0123abc"}
    assert event.payload["metrics"] == {"accuracy": 0.91}
    assert event.payload["training_regions"] == ["eu-west"]
    assert event.payload["by"]
    restart_and_let_it_pass(hub)
    hub.admin.push(tiny_onnx(features=2), "pump")
    assert [e.subject for e in told(hub, "model.registered")] == ["pump:1", "pump:2"]


def _error_rate(hub: Hub) -> list[Event]:
    return [e for e in told(hub, "anomaly.*") if e.payload["metric"] == "error_rate"]


def test_an_error_burst_is_opened_then_closed_once(hub: Hub, tiny_onnx) -> None:
    hub.admin.push(tiny_onnx(features=2), "pump")
    hub.admin.set_anomaly_settings("pump", FAST)
    site = enroll(hub, "plant-a")
    # 30 windows ending a minute ago, the last four failing 30 %: an open anomaly.
    first = math.floor(time.time() / WINDOW_S) * WINDOW_S - 36 * WINDOW_S
    post(hub, "plant-a", site, windows(first, 30, burst=range(26, 30)))
    wait_for(lambda: len(_error_rate(hub)) == 1, "anomaly.opened", timeout=30)
    (opened,) = _error_rate(hub)
    assert (opened.type, opened.subject) == ("anomaly.opened", "plant-a/pump")
    assert opened.payload["site"] == "plant-a"
    assert opened.payload["model"] == "pump"
    assert opened.payload["version"] == 1
    assert opened.payload["open"] is True
    assert opened.payload["end"] is None
    assert opened.payload["observed"] > 0.15
    assert opened.payload["severity"] in ("warning", "critical")
    # The minute after, without errors: the anomaly ends.
    post(hub, "plant-a", site, windows(first + 30 * WINDOW_S, 5))
    wait_for(lambda: len(_error_rate(hub)) == 2, "anomaly.closed", timeout=30)
    closed = _error_rate(hub)[1]
    assert (closed.type, closed.subject) == ("anomaly.closed", "plant-a/pump")
    assert closed.payload["start"] == opened.payload["start"]
    assert closed.payload["end"] is not None
    assert closed.payload["open"] is False
    assert closed.payload["withdrawn"] is False

    restart_and_let_it_pass(hub)
    assert [e.type for e in _error_rate(hub)] == ["anomaly.opened", "anomaly.closed"]
    # Every anomaly told was opened once and closed at most once.
    names = [(e.type, e.payload["metric"], e.payload["start"]) for e in told(hub, "anomaly.*")]
    assert len(names) == len(set(names)), names


def test_drift_is_flagged_then_cleared_once_per_episode(hub: Hub, tiny_onnx) -> None:
    hub.admin.push(tiny_onnx(features=2), "pump")
    reference = profile_array(np.random.default_rng(1).normal(size=(5000, 2)))
    hub.admin.set_reference_profile("pump", 1, reference.to_dict())
    site = enroll(hub, "plant-a")
    # Nobody asks for the drift: the hub's own pass finds the shifted inputs.
    first = math.floor(time.time() / WINDOW_S) * WINDOW_S - 12 * WINDOW_S
    post(hub, "plant-a", site, windows(first, 10, shift=1.5))
    wait_for(lambda: told(hub, "drift.*"), "drift.flagged", timeout=30)
    (flagged,) = told(hub, "drift.*")
    assert (flagged.type, flagged.subject) == ("drift.flagged", "plant-a/pump:1")
    assert flagged.payload["site"] == "plant-a"
    assert flagged.payload["model"] == "pump"
    assert flagged.payload["version"] == 1
    assert flagged.payload["episode"] == 1
    assert flagged.payload["drifted"] == ["X[0]", "X[1]"]
    assert flagged.payload["features"][0]["psi"] > 0.1
    assert flagged.payload["thresholds"]["psi"] == 0.1
    assert flagged.payload["requests"] == 400

    # Thresholds no shift reaches: the verdict turns false, and that is told once.
    hub.admin.set_drift_thresholds("pump", {"psi": 100, "ks_pvalue": 0})
    wait_for(lambda: len(told(hub, "drift.*")) == 2, "drift.cleared", timeout=30)
    cleared = told(hub, "drift.*")[1]
    assert (cleared.type, cleared.subject) == ("drift.cleared", "plant-a/pump:1")
    assert cleared.payload["episode"] == 1

    restart_and_let_it_pass(hub)
    assert [e.type for e in told(hub, "drift.*")] == ["drift.flagged", "drift.cleared"]
    # The default thresholds again: a second episode, read back from the log.
    hub.admin.set_drift_thresholds("pump", {"psi": 0.1, "ks_pvalue": 0.05})
    wait_for(lambda: len(told(hub, "drift.*")) == 3, "a second drift.flagged", timeout=30)
    again = told(hub, "drift.*")[2]
    assert (again.type, again.payload["episode"]) == ("drift.flagged", 2)
