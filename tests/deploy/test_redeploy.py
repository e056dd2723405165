"""What an operator sees while a wave bakes and when a deployment is changed, against a real
store, a fake gate source and simulated agents (``World``), and through the HTTP API.

The rollout record's progress (each gate's figure against its limit), a re-deploy that
keeps the strategy and gates it does not name, a plan that says a rollout is in progress,
a fleet file whose version does not run after an abort, and an empty selector.
"""

from __future__ import annotations

from typing import Any

import pytest

from modelfleet.api import Plan
from modelfleet.api.rollouts import Rollout
from modelfleet.errors import InvalidInput
from modelfleet.hub.deployments import DeployRequest
from modelfleet.hub.gitops import FleetApplier
from modelfleet.hub.rollout.gates import Figures
from tests.deploy.test_controller import CANARY, World, first_version


@pytest.fixture
def hub(hub_factory: Any) -> Any:
    return hub_factory(rollout_interval_s=3600)


@pytest.fixture
def world(hub: Any, tiny_onnx: Any) -> World:
    return World(hub, tiny_onnx)


def gates_of(rollout: Rollout) -> dict[str, Any]:
    assert rollout.progress is not None
    return {g.gate: g for g in rollout.progress.gates}


def test_progress_shows_every_gate_against_its_limit(world: World) -> None:
    first_version(world)
    gates = {"max_error_rate": 0.05, "max_p99_ms": 50, "max_p99_ratio": 2.0, "min_requests": 10}
    rid = world.deploy(2, **CANARY, gates=gates)
    world.source.by_version[1] = Figures(requests=100, errors=0, p99_ms=4.0)  # the baseline
    world.source.by_version[2] = Figures(requests=3, errors=0, p99_ms=3.0)
    world.agents_converge()
    r = Rollout.model_validate(world.controller.view(world.controller.get(rid)))
    p = r.progress
    assert p is not None
    assert (p.wave, p.requests, p.min_requests, p.verdict) == (1, 3, 10, "wait")
    assert p.bake_s == 5
    assert 0 <= p.bake_left_s <= 5
    assert p.pending_sites == []
    checks = gates_of(r)
    assert list(checks) == ["min_requests", "max_error_rate", "max_p99_ms", "max_p99_ratio"]
    assert {g.state for g in checks.values()} == {"waiting"}  # 3 of 10 requests: not judged
    assert (checks["max_p99_ms"].value, checks["max_p99_ms"].limit) == (3.0, 50)
    # The relative gate's limit is the one the controller applies: max(2 x 4, 4 + 10 noise).
    ratio = checks["max_p99_ratio"]
    assert (ratio.value, ratio.limit, ratio.setting, ratio.baseline_ms) == (3.0, 14.0, 2.0, 4.0)

    world.source.by_version[2] = Figures(requests=50, errors=10, p99_ms=3.0)
    r = Rollout.model_validate(world.controller.view(world.controller.get(rid)))
    checks = gates_of(r)
    assert r.progress is not None
    assert r.progress.verdict == "fail"
    assert (checks["max_error_rate"].value, checks["max_error_rate"].state) == (0.2, "breached")
    assert {checks[g].state for g in ("min_requests", "max_p99_ms", "max_p99_ratio")} == {"ok"}

    world.controller.tick()
    r = Rollout.model_validate(world.controller.view(world.controller.get(rid)))
    assert (r.state, r.progress) == ("failed", None)  # progress only while it can move


def test_redeploy_keeps_strategy_and_gates_it_does_not_name(world: World, hub: Any) -> None:
    gates = {"max_error_rate": 0.05, "min_requests": 10}
    rid = world.deploy(1, **{**CANARY, "bake_s": 0}, gates=gates)
    world.source.by_version[1] = Figures(requests=50)
    assert world.run(rid, world.controller.get(rid).step_started_at, 3).state == "succeeded"

    # Through the HTTP API, no strategy and no gates: both kept, the canary's waves again.
    answer = hub.client.post(
        "/api/v1/deployments", json={"ref": "pump:2"}, headers=hub.headers()
    ).json()
    plan = Plan.model_validate(answer["plan"])
    assert plan.kept == ["strategy", "gates", "selector", "params"]
    assert plan.strategy["kind"] == "canary"
    assert plan.gates["min_requests"] == 10
    assert plan.waves == [["a"], ["b"], ["c"]]
    hub.client.post(f"/api/v1/rollouts/{answer['rollout']['id']}/abort", headers=hub.headers())

    # A strategy without a kind amends the kept one; with a kind it replaces it.
    amended = world.deployments.plan(DeployRequest(ref="pump:2", strategy={"bake_s": 7}))
    assert (amended.strategy.kind, amended.strategy.canary, amended.strategy.bake_s) == (
        "canary",
        "a",
        7,
    )
    assert amended.kept == ["strategy", "gates", "selector", "params"]
    replaced = world.deployments.plan(
        DeployRequest(
            ref="pump:2", strategy={"kind": "all-at-once"}, gates={}, selector="", params={}
        )
    )
    assert (replaced.strategy.kind, replaced.kept, replaced.waves) == (
        "all-at-once",
        [],
        [["a", "b", "c"]],
    )
    assert replaced.gates.min_requests == 0
    # A new deployment has nothing to keep: all-at-once, no gates.
    fresh = world.deployments.plan(DeployRequest(ref="pump:2", name="pump-new"))
    assert (fresh.strategy.kind, fresh.kept) == ("all-at-once", [])


def test_redeploy_keeps_the_selector_and_serving_parameters_it_does_not_name(
    world: World, hub: Any
) -> None:
    """A re-deploy that gives only the new version neither widens the deployment to every
    site nor drops its batching; naming them (even '' and {}) replaces them."""
    first_version(world)
    request = {
        "ref": "pump:1",
        "selector": "provider in (aws,gcp)",
        "params": {"max_batch_size": 8},
    }
    assert hub.client.post("/api/v1/deployments", json=request, headers=hub.headers()).is_success
    world.agents_converge()
    answer = hub.client.post(
        "/api/v1/deployments", json={"ref": "pump:2"}, headers=hub.headers()
    ).json()
    plan = Plan.model_validate(answer["plan"])
    assert {"selector", "params"} <= set(plan.kept)
    assert plan.selector == "provider in (aws,gcp)"
    assert sorted(t["site"] for t in plan.targets) == ["a", "b"]
    deployment = hub.client.get("/api/v1/deployments/pump", headers=hub.headers()).json()
    assert (deployment["selector"], deployment["params"]) == (
        "provider in (aws,gcp)",
        {"max_batch_size": 8},
    )
    hub.client.post(f"/api/v1/rollouts/{answer['rollout']['id']}/abort", headers=hub.headers())

    widened = world.deployments.plan(DeployRequest(ref="pump:2", selector="", params={}))
    assert "selector" not in widened.kept
    assert "params" not in widened.kept
    assert sorted(t.site for t in widened.targets) == ["a", "b", "c"]


def test_plan_says_a_rollout_is_in_progress(world: World, hub: Any) -> None:
    first_version(world)
    rid = world.deploy(2, **CANARY)
    answer = hub.client.post(
        "/api/v1/deployments/plan", json={"ref": "pump:3"}, headers=hub.headers()
    )
    plan = Plan.model_validate(answer.json())
    assert plan.ok is False
    assert [c for c in plan.conflicts if rid in c and "promote, abort" in c]


def test_apply_dry_run_after_abort_shows_the_running_version(world: World) -> None:
    applier = FleetApplier(world.ctx.sites, world.deployments)
    doc: dict[str, Any] = {"deployments": [{"model": "pump:1", "strategy": {"bake_s": 0}}]}
    applier.apply(doc, prune=False, dry_run=False, actor="t")
    world.agents_converge()
    world.controller.tick()
    assert world.deployments.get("pump").stable_version == 1
    doc["deployments"][0]["model"] = "pump:2"
    applier.apply(doc, prune=False, dry_run=False, actor="t")
    rid = world.deployments.rollouts(deployment="pump")[0].id
    # While the rollout moves to the file's version, the file and the hub agree.
    assert not applier.apply(doc, prune=False, dry_run=True, actor="t").changes
    world.controller.act(rid, "abort", "admin:test")
    dry = applier.apply(doc, prune=False, dry_run=True, actor="t")
    [change] = dry.changes
    assert (change.kind, change.name, change.action) == ("deployment", "pump", "update")
    assert f"sites run version 1 after rollout {rid} aborted" in change.detail
    assert "applying starts a new rollout" in change.detail
    applier.apply(doc, prune=False, dry_run=False, actor="t")
    assert world.deployments.rollouts(deployment="pump")[0].state == "running"


def test_an_empty_selector_says_it_selects_no_site(world: World, hub: Any) -> None:
    world.deployments.put_policy(
        "two-providers", "spread", {"label": "provider", "min_distinct": 2}
    )
    request = {"ref": "pump:1", "selector": "region=mars"}
    plan = Plan.model_validate(
        hub.client.post("/api/v1/deployments/plan", json=request, headers=hub.headers()).json()
    )
    assert plan.violations == []  # not a spread-rule failure
    [error] = plan.errors
    assert error.startswith("selector 'region=mars' selects no site; labels in use:")
    assert "region=ap-south|eu-west|us-east" in error
    refused = hub.client.post("/api/v1/deployments", json=request, headers=hub.headers())
    assert refused.status_code == 400
    assert "selects no site" in refused.json()["error"]["message"]
    with pytest.raises(InvalidInput, match="selects no site"):
        world.deployments.deploy(DeployRequest(ref="pump:1", selector="regoin=eu-west"), "t")
