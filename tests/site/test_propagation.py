"""50 lightweight in-process agents long-polling one real hub process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.settings import SiteSettings
from modelfleet.sim.launcher import HubProcess
from modelfleet.site.agent import SiteAgent
from tests.conftest import trust_fleet_ca

AGENTS = 50


def test_assignment_reaches_fifty_agents_within_seconds(
    tmp_path: Path, tiny_onnx, monkeypatch: pytest.MonkeyPatch
) -> None:
    init = init_hub(tmp_path / "hub")
    hub = HubProcess(tmp_path / "hub").start()
    trust_fleet_ca(monkeypatch, hub.ca_file)
    agents: list[SiteAgent] = []
    try:
        with HubClient(hub.url, init.admin_token) as admin:
            admin.push(tiny_onnx(offset=1.0), "pump")
            admin.push(tiny_onnx(offset=2.0), "pump")
            t0 = time.monotonic()
            for i in range(AGENTS):
                token = admin.add_site(f"s{i:02d}", {"region": "eu-west"})["enrollment_token"]
                settings = SiteSettings(
                    state_dir=tmp_path / f"s{i:02d}", report_interval_s=5.0, long_poll_s=30.0
                )
                agent = SiteAgent(settings, hub_url=hub.url, enrollment_token=token)
                agent.start()
                agents.append(agent)
            print(f"phase: {AGENTS} agents enrolled and started in {time.monotonic() - t0:.1f} s")
            t0 = time.monotonic()
            for i in range(AGENTS):
                admin.assign(f"s{i:02d}", "pump:1")
            _wait_all(agents, 1, timeout=60)
            print(f"phase: first assignment active in {time.monotonic() - t0:.1f} s")
            time.sleep(1.0)  # every agent is now parked in a long-poll

            started = time.monotonic()
            for i in range(AGENTS):
                admin.assign(f"s{i:02d}", "pump:2")
            assigned = time.monotonic() - started
            elapsed = assigned + _wait_all(agents, 2, timeout=30)
        print(
            f"propagation to {AGENTS} agents: version 2 active on all {elapsed:.2f} s after the "
            f"first of the {AGENTS} assignments was issued (issuing them took {assigned:.2f} s)"
        )
        assert all(a.repository.get("pump").version == 2 for a in agents)
    finally:
        for agent in agents:
            agent.stop()
        hub.stop()


def _wait_all(agents: list[SiteAgent], version: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if all(_active(a) == version for a in agents):
            return time.monotonic() - started
        time.sleep(0.02)
    missing = [a.site for a in agents if _active(a) != version]
    raise AssertionError(f"version {version} not active on {missing} after {timeout}s")


def _active(agent: SiteAgent) -> int | None:
    try:
        return agent.repository.get("pump").version
    except Exception:
        return None
