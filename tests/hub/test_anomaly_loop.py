"""The hub's anomaly loop in a real hub process: windows posted are judged by the loop's
next pass, not by the request that lists them; a settings change is used by the next pass."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess
from tests.hub.test_anomalies_api import FAST, Hub, enroll, post, site_windows
from tests.waiting import wait_for


def _hub(tmp_path: Path, interval_s: float) -> Iterator[Hub]:
    init = init_hub(tmp_path / "hub")
    process = HubProcess(
        tmp_path / "hub",
        tls=False,
        extra_env={"MODELFLEET_HUB_ANOMALY_INTERVAL_S": str(interval_s)},
    ).start()
    admin = HubClient(process.url, init.admin_token)
    try:
        yield Hub(process, admin, init.admin_token)
    finally:
        admin.close()
        process.stop()


@pytest.fixture
def quick_hub(tmp_path: Path) -> Iterator[Hub]:
    yield from _hub(tmp_path, 1.0)


@pytest.fixture
def slow_hub(tmp_path: Path) -> Iterator[Hub]:
    yield from _hub(tmp_path, 600.0)


def _error_rate(hub: Hub) -> list[dict[str, Any]]:
    found = hub.admin.anomalies(open_only=True)["anomalies"]
    return [a for a in found if a["metric"] == "error_rate"]


def test_the_loop_finds_what_was_posted_with_the_new_settings(quick_hub: Hub, tiny_onnx) -> None:
    hub = quick_hub
    hub.admin.push(tiny_onnx(features=2), "pump")
    site = enroll(hub, "plant-a")
    # 5 minutes: too short for the default warm-up of 10 buckets of 60 s, so only the
    # settings below (10 s buckets, warm-up 5) can find the burst.
    post(hub, "plant-a", site, site_windows(time.time() - 10, 30, burst_from=26))
    hub.admin.set_anomaly_settings("pump", FAST)
    wait_for(lambda: bool(_error_rate(hub)), "the loop's pass to list the error burst", 30)
    (found,) = _error_rate(hub)
    assert (found["site"], found["model"], found["open"]) == ("plant-a", "pump", True)
    assert hub.admin.get_anomaly_settings("pump")["bucket_s"] == 10


def test_requests_answer_from_the_last_pass_and_a_settings_change_runs_one(
    slow_hub: Hub, tiny_onnx
) -> None:
    hub = slow_hub
    hub.admin.push(tiny_onnx(features=2), "pump")
    site = enroll(hub, "plant-a")
    assert _error_rate(hub) == []  # the first pass (done by now): nothing posted yet
    # With the default 60 s buckets these 15 minutes end in an error burst of 3 buckets.
    post(hub, "plant-a", site, site_windows(time.time() - 10, 90, burst_from=72))
    for _ in range(3):  # listing does not compute: the next pass is 10 minutes away
        assert _error_rate(hub) == []
        assert hub.admin.anomalies()["anomalies"] == []
    # A settings change wakes the loop; its pass rebuilds the model's series with them.
    hub.admin.set_anomaly_settings("pump", {"sensitivity": 5})
    wait_for(lambda: bool(_error_rate(hub)), "the pass after the settings change", 30)
    (found,) = _error_rate(hub)
    assert found["observed"] > 0.15
