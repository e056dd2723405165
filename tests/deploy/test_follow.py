"""Deployments that follow an alias, and approval pauses: the controller driven tick by tick
with explicit times against a real store, a fake gate source and simulated agents (the
same world as test_controller.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from modelfleet.errors import Conflict, InvalidInput
from modelfleet.hub.deployments import DeployRequest
from modelfleet.hub.events import Events
from modelfleet.hub.gitops import FleetApplier
from modelfleet.hub.rollout.controller import RolloutController
from modelfleet.hub.rollout.gates import Figures
from tests.deploy.test_controller import World

GOOD = Figures(requests=50, errors=0, p99_ms=3.0)
BAD = Figures(requests=50, errors=25, p99_ms=3.0)
CANARY = {"kind": "canary", "canary": "a", "then": [50, 100], "bake_s": 5}
GATES = {"max_error_rate": 0.01, "min_requests": 10}


class FollowWorld(World):
    """The controller world with an event log, a fourth version and an alias."""

    def __init__(self, hub: Any, tiny_onnx: Any) -> None:
        self.events = Events(hub.ctx.store)
        super().__init__(hub, tiny_onnx)
        self.ctx.registry.push(*self._upload(tiny_onnx(offset=4.0)), actor="test")
        for version in (1, 2, 3, 4):
            self.source.by_version[version] = GOOD

    def new_controller(self) -> RolloutController:
        return RolloutController(
            self.deployments,
            self.source,
            self.store.leadership("rollout controller"),
            events=self.events,
        )

    def alias(self, version: int) -> None:
        self.ctx.registry.set_alias("pump", "production", version)

    def follow(self, **strategy: Any) -> str:
        request = DeployRequest(
            ref="pump@production", follow=True, strategy=strategy or {"bake_s": 0}, gates=GATES
        )
        _, rollout, _ = self.deployments.deploy(request, "admin:test")
        assert rollout is not None
        return rollout.id

    def ticks(self, seconds: float) -> None:
        start = self.store.now()
        t = 0.0
        while t <= seconds:
            self.agents_converge()
            self.controller.tick(start + timedelta(seconds=t))
            t += 1.0

    def rollouts(self) -> list[Any]:
        return self.deployments.rollouts(deployment="pump")

    def follow_view(self) -> dict[str, Any]:
        view = self.deployments.view(self.deployments.get("pump"))["follow"]
        assert view is not None
        return dict(view)

    def event_types(self) -> list[str]:
        return [e.type for e in self.store.events.list_events(limit=1000)]


@pytest.fixture
def world(hub_factory: Any, tiny_onnx: Any) -> FollowWorld:
    return FollowWorld(hub_factory(rollout_interval_s=3600), tiny_onnx)


def on_production(world: FollowWorld, version: int = 1) -> None:
    world.alias(version)
    world.follow()
    world.ticks(1)
    assert world.rollouts()[0].state == "succeeded"
    assert [world.assigned(s) for s in "abc"] == [version] * 3


def test_an_alias_move_starts_the_deployments_rollout_once(world: FollowWorld) -> None:
    on_production(world)
    world.alias(2)
    world.controller.tick(world.store.now())
    latest = world.rollouts()[0]
    assert (latest.from_version, latest.to_version, latest.created_by) == (1, 2, "follow")
    assert latest.plan["gates"]["max_error_rate"] == 0.01  # the deployment's own gates
    # A second controller (another replica, or this one after a restart) starts nothing.
    world.new_controller().tick(world.store.now())
    world.controller.tick(world.store.now())
    assert len(world.rollouts()) == 2
    world.ticks(1)
    assert world.rollouts()[0].state == "succeeded"
    assert [world.assigned(s) for s in "abc"] == [2, 2, 2]
    assert world.follow_view()["state"] == "following"
    assert "deployment.follow_started" in world.event_types()
    started = [e for e in world.store.events.list_events(limit=1000) if e.type == "rollout.started"]
    assert any(e.payload["by"] == "follow" for e in started)


def test_the_start_is_a_compare_and_set_on_the_deployment(world: FollowWorld) -> None:
    on_production(world)
    stale = world.deployments.get("pump")
    world.alias(2)
    world.controller.tick(world.store.now())  # the leader acted: the row moved on
    with pytest.raises(Conflict):
        world.deployments.deploy(
            DeployRequest(ref="pump@production", follow=True),
            "follow",
            if_unchanged=stale.updated_at,
        )
    assert len(world.rollouts()) == 2


def test_a_move_during_a_rollout_waits_and_the_latest_wins(world: FollowWorld) -> None:
    on_production(world)
    world.deployments.deploy(DeployRequest(ref="pump@production", strategy=CANARY), "admin:test")
    world.alias(2)
    world.controller.tick(world.store.now())
    running = world.rollouts()[0]
    assert (running.to_version, running.state) == (2, "running")
    world.alias(3)
    world.alias(4)
    world.controller.tick(world.store.now())
    assert world.rollouts()[0].id == running.id  # no second rollout while one runs
    queued = world.follow_view()
    assert (queued["state"], queued["target_version"]) == ("queued", 4)
    world.run(running.id, running.step_started_at, 20)
    assert world.controller.get(running.id).state == "succeeded"
    world.controller.tick(world.store.now())
    latest = world.rollouts()[0]
    assert (latest.from_version, latest.to_version) == (2, 4)  # version 3 skipped
    assert [r.to_version for r in world.rollouts()] == [4, 2, 1]


def test_a_failed_version_is_not_retried_until_the_alias_moves(world: FollowWorld) -> None:
    on_production(world)
    world.source.by_version[2] = BAD
    world.alias(2)
    world.ticks(3)
    failed = world.rollouts()[0]
    assert (failed.to_version, failed.state) == (2, "failed")
    world.ticks(5)
    world.new_controller().tick(world.store.now())  # a restarted hub does not retry either
    assert len(world.rollouts()) == 2
    assert [world.assigned(s) for s in "abc"] == [1, 1, 1]  # the last good version
    assert world.deployments.resolve("pump@production").version == 2  # alias untouched
    view = world.follow_view()
    assert (view["state"], view["blocked_version"], view["fleet_version"]) == ("blocked", 2, 1)
    assert "v2 failed" in view["message"]
    assert "fleet stays on v1" in view["message"]
    assert "max_error_rate" in view["reason"]
    # Away (to what the fleet runs: nothing to roll out) and back: followed again.
    world.alias(1)
    world.controller.tick(world.store.now())
    assert len(world.rollouts()) == 2
    assert world.follow_view()["state"] == "following"
    world.source.by_version[2] = GOOD
    world.alias(2)
    world.ticks(2)
    assert (world.rollouts()[0].to_version, world.rollouts()[0].state) == (2, "succeeded")


def test_approval_pauses_before_the_wave_after_the_canary(world: FollowWorld) -> None:
    on_production(world)
    world.deployments.deploy(
        DeployRequest(ref="pump@production", strategy={**CANARY, "approval": "required"}),
        "admin:test",
    )
    world.alias(2)
    world.controller.tick(world.store.now())
    rid = world.rollouts()[0].id
    r = world.run(rid, world.store.now(), 10)
    assert (r.state, r.step, r.awaiting_approval) == ("paused", 1, True)
    assert "modelfleet rollout approve" in r.reason
    assert [world.assigned(s) for s in "abc"] == [2, 1, 1]  # wave 2 has not moved
    view = world.controller.view(r)
    assert view["approval"]["awaiting"]
    assert view["approval"]["wave"] == 2
    assert view["waves"][1]["status"] == "awaiting approval"
    world.run(rid, world.store.now(), 30)
    assert world.controller.get(rid).state == "paused"  # it waits, however long
    for action in ("resume", "promote"):
        with pytest.raises(Conflict, match="approve"):
            world.controller.act(rid, action, "admin:test")
    approved = world.controller.act(rid, "approve", "admin:ops")
    assert approved.state == "running"
    assert [world.assigned(s) for s in "abc"] == [2, 2, 1]
    with pytest.raises(Conflict, match="does not await approval"):
        world.controller.act(rid, "approve", "admin:ops")
    r = world.run(rid, approved.step_started_at, 20)
    assert r.state == "succeeded"
    assert world.controller.view(r)["approval"]["approved_by"] == "admin:ops"
    types = world.event_types()
    assert types.count("rollout.awaiting_approval") == 1
    assert types.count("rollout.approved") == 1


def test_approval_before_wave_one_moves_no_site(world: FollowWorld) -> None:
    on_production(world)
    _, rollout, _ = world.deployments.deploy(
        DeployRequest(ref="pump:2", strategy={"bake_s": 0, "approval": {"wave": 1}}),
        "admin:test",
    )
    assert rollout is not None
    assert rollout.awaiting_approval
    world.ticks(3)
    assert [world.assigned(s) for s in "abc"] == [1, 1, 1]
    assert "rollout.awaiting_approval" in world.event_types()
    world.controller.act(rollout.id, "approve", "admin:ops")
    assert [world.assigned(s) for s in "abc"] == [2, 2, 2]


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"ref": "pump:2", "follow": True}, "needs a NAME@ALIAS ref"),
        (
            {"ref": "pump:2", "strategy": {**CANARY, "approval": {"wave": 4}}},
            "approval before wave 4 is out of range: this rollout has 3 wave(s)",
        ),
        (
            {"ref": "pump:2", "strategy": {"approval": "required"}},
            "approval before wave 2 is out of range: this rollout has 1 wave(s)",
        ),
        ({"ref": "pump:2", "strategy": {"approval": {"wave": "canary"}}}, "canary strategy"),
        ({"ref": "pump:2", "strategy": {"approval": {"wave": 0}}}, "must be 1-1000"),
    ],
)
def test_bad_follow_or_approval_is_refused_with_the_reason(
    world: FollowWorld, request_fields: dict[str, Any], message: str
) -> None:
    on_production(world)
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        world.deployments.deploy(DeployRequest(**request_fields), "admin:test")
    assert len(world.rollouts()) == 1


def test_a_fleet_file_follows_and_a_reapply_changes_nothing(world: FollowWorld) -> None:
    world.alias(1)
    applier = FleetApplier(world.ctx.sites, world.deployments)
    doc = {"deployments": [{"model": "pump@production", "follow": True, "strategy": {"bake_s": 0}}]}
    assert applier.apply(doc, prune=False, dry_run=False, actor="admin:test").changes
    world.ticks(1)
    world.alias(2)
    world.controller.tick(world.store.now())  # the follower starts v2
    again = applier.apply(doc, prune=False, dry_run=False, actor="admin:test")
    assert again.changes == []  # the version is the follow rule's business, not a diff
    assert world.deployments.get("pump").follow
    with pytest.raises(InvalidInput, match="follow needs model: NAME@ALIAS"):
        applier.apply(
            {"deployments": [{"model": "pump:1", "follow": True}]},
            prune=False,
            dry_run=True,
            actor="admin:test",
        )


def test_deploying_a_pinned_version_stops_following(world: FollowWorld) -> None:
    on_production(world)
    world.deployments.deploy(DeployRequest(ref="pump@production"), "admin:test")
    assert world.deployments.get("pump").follow  # kept
    world.deployments.deploy(DeployRequest(ref="pump:1"), "admin:test")
    assert not world.deployments.get("pump").follow
    world.alias(2)
    world.controller.tick(world.store.now())
    assert len(world.rollouts()) == 1


def test_follow_state_round_trips_on_postgres(
    hub_factory: Any, tiny_onnx: Any, postgres_url: str
) -> None:
    """The follow columns (migration 0012) and their compare-and-set on PostgreSQL."""
    world = FollowWorld(hub_factory(db=postgres_url, rollout_interval_s=3600), tiny_onnx)
    on_production(world)
    world.source.by_version[2] = BAD
    world.alias(2)
    world.ticks(3)
    world.new_controller().tick(world.store.now())
    assert [r.to_version for r in world.rollouts()] == [2, 1]
    record = world.deployments.get("pump")
    assert (record.follow, record.follow_version, record.stable_version) == (True, 2, 1)
    assert world.follow_view()["state"] == "blocked"


def test_a_move_the_plan_refuses_is_noted_and_not_retried(world: FollowWorld) -> None:
    on_production(world)
    world.deployments.put_policy(
        "global-not-in-asia",
        "residency",
        {"training_regions": ["global"], "allowed_jurisdictions": ["EU", "US"]},
    )
    world.alias(2)
    world.ticks(3)
    assert len(world.rollouts()) == 1  # refused: no rollout, and no retry every tick
    view = world.follow_view()
    assert (view["state"], view["blocked_version"], view["fleet_version"]) == ("blocked", 2, 1)
    assert "global-not-in-asia" in view["reason"]
    assert world.event_types().count("deployment.follow_blocked") == 1
    world.deployments.remove_policy("global-not-in-asia")
    world.alias(3)
    world.controller.tick(world.store.now())
    assert world.rollouts()[0].to_version == 3  # the next move is followed
