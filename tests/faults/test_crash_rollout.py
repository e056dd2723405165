"""The hub SIGKILLed by its rollout controller between a wave's committed transition and
the assignments (and events) that follow from it, then restarted on the same data
directory: the rollout goes on and succeeds, each site's assignment changes once, and
its history and events tell each wave once.

A real hub and two real sites; a canary rollout of two waves (ro-a, then ro-b) with no
bake time, so the controller moves on as soon as each wave's site runs the new version.
The hub starts armed at ``hub.rollout.after_assign`` to die on its second pass: the
baseline deployment (one wave, straight to succeeded) passes the point once first.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess, wait_http
from tests.conftest import trust_fleet_ca, write_tiny_onnx
from tests.deploy.fleet import HUB_ENV, SITE_ENV
from tests.faults.crash import armed, wait_killed
from tests.waiting import wait_for

SITES = ("ro-a", "ro-b")
MODEL = "tiny-ro"
POINT = "hub.rollout.after_assign"
#: Sites retry the restarted hub within half a second (the default back-off grows to 60 s).
ENV = {**SITE_ENV, "MODELFLEET_SITE_RETRY_MAX_S": "0.5"}


def _active(admin: HubClient, site: str) -> int | None:
    for model in admin.get_site(site)["models"]:
        if model["name"] == MODEL:
            return model.get("active_version")
    return None


def _settle(admin: HubClient, rollout_id: str) -> dict[str, Any]:
    def done() -> bool:
        return admin.get_rollout(rollout_id)["state"] not in ("running", "paused")

    wait_for(done, f"rollout {rollout_id} to finish")
    return dict(admin.get_rollout(rollout_id))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, HubProcess, HubClient]]:
    root = tmp_path_factory.mktemp("rollout-crash")
    init = init_hub(root / "hub")
    marker = root / "rollout.crashed"
    arm = armed(POINT, marker, after=1)  # the baseline's transition passes the point first
    hub = HubProcess(root / "hub", extra_env={**HUB_ENV, **arm}).start(timeout=60)
    trusted = pytest.MonkeyPatch()  # module scope: undone in the finally below
    trust_fleet_ca(trusted, hub.ca_file)
    admin = HubClient(hub.url, init.admin_token)
    sites: list[SiteProcess] = []
    try:
        for name in SITES:
            token = admin.add_site(name, {"region": "eu-west"})["enrollment_token"]
            site = SiteProcess(root / name, hub.url, token, extra_env=ENV)
            site.log_level = "info"  # the test counts each site's model swaps
            sites.append(site.start(wait_ready=False))
        for site in sites:
            wait_http(f"{site.url}/v2/health/ready", 60, site.proc)
        wait_for(lambda: all(s["online"] for s in admin.list_sites()), "sites online")
        yield marker, hub, admin
    finally:
        for site in sites:
            site.stop()
        admin.close()
        hub.stop()
        trusted.undo()


def test_hub_killed_between_wave_transition_and_assignments(
    fleet: tuple[Path, HubProcess, HubClient],
) -> None:
    marker, hub, admin = fleet
    root = marker.parent
    admin.push(write_tiny_onnx(root / "v1.onnx", offset=1.0), MODEL)
    base = admin.deploy({"ref": f"{MODEL}:1", "selector": "", "strategy": {"bake_s": 0}})
    assert _settle(admin, base["rollout"]["id"])["state"] == "succeeded"
    wait_for(lambda: all(_active(admin, s) == 1 for s in SITES), "version 1 at both sites")

    assert hub.proc is not None
    assert hub.proc.poll() is None  # passed the point once, alive
    before = {s: admin.get_site(s)["revision"] for s in SITES}
    admin.push(write_tiny_onnx(root / "v2.onnx", offset=2.0), MODEL)
    canary = {"kind": "canary", "canary": "ro-a", "then": [100], "bake_s": 0}
    started = admin.deploy({"ref": f"{MODEL}:2", "selector": "", "strategy": canary})
    rollout_id = started["rollout"]["id"]
    assert started["plan"]["waves"] == [["ro-a"], ["ro-b"]]

    # Wave 1 (ro-a) passes; the controller commits "wave 2 started" and dies before it
    # writes ro-b's assignment.
    wait_killed(hub.proc, POINT, marker)
    hub.extra_env = dict(HUB_ENV)
    hub.start(timeout=60)

    final = _settle(admin, rollout_id)
    assert final["state"] == "succeeded", final["reason"]
    wait_for(lambda: all(_active(admin, s) == 2 for s in SITES), "version 2 at both sites")
    # Each wave decided once, in order: no wave started (or passed) twice.
    assert [(h["step"], h["outcome"]) for h in final["history"]] == [
        (0, "success"),
        (1, "success"),
    ]
    # Each site's assignment was written once for the new version: one revision each.
    assert {s: admin.get_site(s)["revision"] for s in SITES} == {s: before[s] + 1 for s in SITES}
    for site in SITES:
        log = (root / f"{site}.log").read_text()
        assert log.count(f"model {MODEL} swapped: v1 -> v2") == 1, site
    # The events the restarted hub told for the transition it had not announced: each once.
    events = [
        (e.type, e.payload.get("wave"))
        for e in admin.list_events(types=["rollout.*"], limit=1000)
        if e.subject == rollout_id
    ]
    assert sorted(events, key=str) == sorted(
        [
            ("rollout.started", None),
            ("rollout.wave_passed", 1),
            ("rollout.wave_passed", 2),
            ("rollout.succeeded", None),
        ],
        key=str,
    )
