"""What a real site process writes: at INFO only what changed, an outage once and its end once.

Issue 17 found a site's INFO log made of hub calls (82 of 87 lines after five minutes) and
silent when the hub went away. These tests count lines in the log of a ``site serve``
process against a real hub: the traffic itself (polls, telemetry) is counted at the hub, by
its request metrics, so the INFO log is judged after a known amount of traffic.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess
from tests.conftest import trust_fleet_ca
from tests.waiting import wait_for

#: A site that polls and ships often, and retries a lost hub every second or less.
BUSY_SITE = {
    "MODELFLEET_SITE_LONG_POLL_S": "0.2",
    "MODELFLEET_SITE_TELEMETRY_WINDOW_S": "0.5",
    "MODELFLEET_SITE_TELEMETRY_SHIP_INTERVAL_S": "0.2",
    "MODELFLEET_SITE_RETRY_MAX_S": "1",
}
#: A log record as ``configure_logging`` writes it: time, level, logger, message.
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


@dataclass
class Fleet:
    hub: HubProcess
    admin: HubClient
    site: SiteProcess
    infer_token: str

    def log(self) -> list[str]:
        return (self.site.log_path or Path()).read_text().splitlines()

    def hub_requests(self, route: str, method: str) -> int:
        """Requests the hub answered on ``route`` (a route template), from its /metrics."""
        text = self.admin.request("GET", "/metrics").text
        pattern = re.compile(
            rf'^modelfleet_hub_requests_total\{{method="{method}",route="{re.escape(route)}",'
            r'status="\d+"\} ([0-9.e+]+)$',
            re.M,
        )
        return int(sum(float(found) for found in pattern.findall(text)))

    def infer(self) -> None:
        response = httpx.post(
            f"{self.site.url}/v2/models/pump/infer",
            json={"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]},
            headers={"Authorization": f"Bearer {self.infer_token}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text


def start_fleet(
    root: Path, tiny_onnx: Callable[..., Path], mp: pytest.MonkeyPatch, log_level: str
) -> Fleet:
    init = init_hub(root / "hub")
    hub = HubProcess(root / "hub").start()
    trust_fleet_ca(mp, hub.ca_file)
    admin = HubClient(hub.url, init.admin_token)
    admin.push(tiny_onnx(), "pump", alias="production")
    created = admin.add_site("plant", {"region": "eu-west"})
    infer_token = admin.create_token("logs", "infer").token
    admin.assign("plant", "pump@production")
    site = SiteProcess(
        root / "site",
        hub.url,
        created["enrollment_token"],
        log_path=root / "site.log",
        log_level=log_level,
        extra_env=BUSY_SITE,
    ).start(timeout=60)
    return Fleet(hub, admin, site, infer_token)


@pytest.fixture
def fleets(tmp_path: Path) -> Iterator[list[Fleet]]:
    made: list[Fleet] = []
    yield made
    for fleet in made:
        fleet.site.stop()
        fleet.admin.close()
        fleet.hub.stop()


DESIRED = "/api/v1/sites/{name}/desired-state"
TELEMETRY = "/api/v1/sites/{name}/telemetry"


def test_info_log_holds_only_the_start_and_the_activation_after_much_traffic(
    tmp_path: Path,
    tiny_onnx: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    fleets: list[Fleet],
) -> None:
    fleet = start_fleet(tmp_path, tiny_onnx, monkeypatch, "info")
    fleets.append(fleet)
    wait_for(lambda: any("model pump:1 activated" in line for line in fleet.log()), "activation")
    polls, sends = fleet.hub_requests(DESIRED, "GET"), fleet.hub_requests(TELEMETRY, "POST")

    def traffic_done() -> bool:
        fleet.infer()  # requests make telemetry windows, which the site ships
        return (
            fleet.hub_requests(DESIRED, "GET") >= polls + 20
            and fleet.hub_requests(TELEMETRY, "POST") >= sends + 3
        )

    wait_for(traffic_done, "20 more desired-state polls and 3 telemetry sends")

    lines = fleet.log()
    expected = [
        r"INFO modelfleet\.site enrolled as site plant; CA and signing keys pinned$",
        r"INFO modelfleet\.site model pump:1 activated$",
        r"INFO modelfleet\.transport\.server serving on https://127\.0\.0\.1:\d+$",
    ]
    records = sorted(line for line in lines if RECORD.match(line))
    assert len(records) == len(expected), "\n".join(lines)
    for pattern in expected:
        assert sum(bool(re.search(pattern, line)) for line in records) == 1, (pattern, lines)
    # Besides the records, the one start-up line the command prints (one line, not wrapped).
    others = [line for line in lines if not RECORD.match(line)]
    assert len(others) == 1, lines
    assert others[0].startswith("site plant serving on https://"), lines
    assert "restored from cache: nothing" in others[0]


def test_a_killed_hub_is_one_warning_and_its_return_one_line_with_the_time_away(
    tmp_path: Path,
    tiny_onnx: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    fleets: list[Fleet],
) -> None:
    # At DEBUG, the retries in between show too: the test can see that there were several.
    fleet = start_fleet(tmp_path, tiny_onnx, monkeypatch, "debug")
    fleets.append(fleet)
    wait_for(lambda: any("model pump:1 activated" in line for line in fleet.log()), "activation")

    def lines_with(text: str, level: str | None = None) -> list[str]:
        return [
            line
            for line in fleet.log()
            if text in line and (level is None or f" {level} modelfleet." in line)
        ]

    fleet.hub.kill()  # SIGKILL: no goodbye, as in a crash
    wait_for(lambda: len(lines_with("hub still unreachable")) >= 3, "three retries")
    fleet.hub.start()
    wait_for(lambda: bool(lines_with("back after")), "the hub back")
    fleet.infer()  # still serving, as before and during the outage

    lost = lines_with("hub unreachable")
    assert len(lost) == 1, lost
    assert " WARNING modelfleet.site " in lost[0]
    assert fleet.hub.url in lost[0]  # which hub
    back = lines_with("back after")
    assert len(back) == 1, back
    said = rf" INFO modelfleet\.site hub at {re.escape(fleet.hub.url)} back after \d+\.\d+s$"
    assert re.search(said, back[0]), back
    # Every retry of the outage is DEBUG, nothing above it but the one warning.
    retries = lines_with("hub still unreachable")
    assert all(" DEBUG modelfleet.site " in line for line in retries)
    warnings = [line for line in fleet.log() if re.search(r" (WARNING|ERROR|CRITICAL) ", line)]
    assert warnings == lost
    assert not lines_with("Traceback")
