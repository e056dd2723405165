"""Following an alias and approving a wave with the CLI, against a real hub and three real
site agents: the alias moves, the fleet rolls out by itself; a version the canary site
refuses fails, the fleet stays on the last good version and the deployment says so; a
rollout waits for ``rollout approve`` before its second wave."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modelfleet.errors import InvalidInput, PermissionDenied
from modelfleet.hub_client import HubClient
from tests.deploy.fleet import CANARY, Fleet, deploy, reported
from tests.waiting import wait_for


def _versions(fleet: Fleet, model: str) -> list[object]:
    return [reported(fleet, s, model).get("active_version") for s in sorted(fleet.sites)]


def _refused(fleet: Fleet, *args: str) -> str:
    """What a user sees when the hub refuses a CLI command (exit 1): the process's stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "modelfleet", *args, "--hub", fleet.hub.url, "--token", fleet.token],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done
    return " ".join((done.stdout + done.stderr).split())


def _follow_state(fleet: Fleet, name: str) -> str | None:
    follow = fleet.admin.get_deployment(name).follow
    return follow.state if follow is not None else None


def _rollouts(fleet: Fleet, model: str) -> list[dict[str, object]]:
    return [dict(r) for r in fleet.admin.list_rollouts() if r.model == model]


def test_an_alias_move_rolls_the_fleet_out_and_a_failed_version_stays_out(fleet: Fleet) -> None:
    name = "follow-m"
    fleet.admin.push(fleet.model(offset=1.0), name, training_regions=["global"], alias="production")
    out = fleet.cli("deploy", f"{name}@production", "--follow", "--canary", "site-a", "--bake", "0")
    assert "following production" in out
    wait_for(lambda: _versions(fleet, name) == [1, 1, 1], what="v1 everywhere")

    fleet.admin.push(fleet.model(offset=2.0), name, training_regions=["global"])
    fleet.cli("model", "alias", name, "2", "production")
    wait_for(
        lambda: (
            _rollouts(fleet, name)[0]["state"] == "succeeded"
            and _versions(fleet, name) == [2, 2, 2]
        ),
        what="v2 everywhere, by itself",
    )
    latest = _rollouts(fleet, name)[0]
    assert (latest["to_version"], latest["created_by"], latest["state"]) == (
        2,
        "follow",
        "succeeded",
    )
    moved = fleet.admin.list_events(types=["model.alias_moved", "deployment.follow_started"])
    assert {e.type for e in moved if e.subject.startswith(name)} == {
        "model.alias_moved",
        "deployment.follow_started",
    }

    # Version 3 was trained on US data: site-a's own policy refuses it, the canary fails.
    fleet.admin.push(fleet.model(offset=3.0), name, training_regions=["US"])
    fleet.cli("model", "alias", name, "3", "production")
    wait_for(
        lambda: _follow_state(fleet, name) == "blocked",
        what="the deployment blocked on v3",
    )
    follow = fleet.admin.get_deployment(name).follow
    assert follow is not None
    assert (follow.blocked_version, follow.fleet_version, follow.target_version) == (3, 2, 3)
    listing = " ".join(fleet.cli("deployments").split())
    assert "v3 failed" in listing
    assert "fleet stays on v2" in listing
    wait_for(lambda: _versions(fleet, name) == [2, 2, 2], what="the canary back on v2")
    # The alias away to what the fleet runs: acted on (no rollout), proving the controller
    # ticked past the failure without retrying v3.
    fleet.cli("model", "alias", name, "2", "production")
    wait_for(
        lambda: _follow_state(fleet, name) == "following",
        what="following v2 again",
    )
    assert [r["to_version"] for r in _rollouts(fleet, name)] == [3, 2, 1]


def test_a_rollout_waits_for_approval_before_its_second_wave(fleet: Fleet) -> None:
    name = "approve-m"
    fleet.admin.push(fleet.model(offset=1.0), name, training_regions=["global"])
    result = deploy(
        fleet,
        f"{name}:1",
        strategy={"kind": "canary", "canary": "site-a", "bake_s": 0, "approval": "required"},
    )
    rid = result["rollout"]["id"]
    wait_for(
        lambda: fleet.admin.get_rollout(rid).state == "paused",
        what="the pause before wave 2",
    )
    r = fleet.admin.get_rollout(rid)
    assert r.approval is not None
    assert r.approval.awaiting
    assert r.approval.wave == 2
    status = " ".join(fleet.cli("rollout", "status", rid).split())
    assert "awaiting approval before wave 2" in status
    assert f"modelfleet rollout approve {rid}" in status
    assert reported(fleet, "site-a", name).get("active_version") == 1
    assert reported(fleet, "site-b", name) == {}  # wave 2 was never told

    viewer = HubClient(fleet.hub.url, fleet.admin.create_token("follow-viewer", "viewer").token)
    with viewer, pytest.raises(PermissionDenied):
        viewer.approve_rollout(rid)
    out = fleet.cli("rollout", "approve", rid)
    assert "running" in out or "succeeded" in out
    wait_for(lambda: fleet.admin.get_rollout(rid).state == "succeeded", what="success")
    wait_for(lambda: _versions(fleet, name) == [1, 1, 1], what="v1 everywhere")
    assert any(e.action == "rollout.approve" and e.object == rid for e in fleet.admin.list_audit())
    types = {
        e.type for e in fleet.admin.list_events(types=["rollout.*"], limit=1000) if e.subject == rid
    }
    assert {"rollout.awaiting_approval", "rollout.approved", "rollout.succeeded"} <= types


def test_bad_follow_and_approval_input_is_refused_with_the_reason(fleet: Fleet) -> None:
    name = "refuse-m"
    fleet.admin.push(fleet.model(offset=1.0), name, training_regions=["global"])
    out = _refused(fleet, "deploy", f"{name}:1", "--follow")
    assert "needs a NAME@ALIAS ref" in out
    assert "Traceback" not in out
    with pytest.raises(InvalidInput, match="out of range: this rollout has 3 wave"):
        deploy(
            fleet,
            f"{name}:1",
            strategy={**CANARY, "approval": {"wave": 9}},
        )
    out = _refused(fleet, "deploy", f"{name}:1", "--approval", "canary")
    assert "needs a canary strategy" in out
    assert _rollouts(fleet, name) == []
