"""The rollout state machine against a real store, a fake gate source and simulated agents.

Each tick is driven by hand with explicit times, so waves, bake times, deadlines, failures
and a controller restart are checked deterministically in milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from modelfleet.errors import Conflict, PolicyViolation
from modelfleet.hub.deployments import Deployments, DeployRequest
from modelfleet.hub.gitops import FleetApplier
from modelfleet.hub.rollout.controller import RolloutController
from modelfleet.hub.rollout.gates import Figures

LABELS = {
    "a": {"region": "eu-west", "jurisdiction": "EU", "provider": "aws"},
    "b": {"region": "us-east", "jurisdiction": "US", "provider": "gcp"},
    "c": {"region": "ap-south", "jurisdiction": "IN", "provider": "azure"},
}


class FakeSource:
    def __init__(self) -> None:
        self.by_version: dict[int, Figures] = {}

    def figures(
        self,
        model: str,
        version: int,
        sites: Sequence[str],
        since: datetime,
        until: datetime | None = None,
        *,
        drift: bool = False,
        anomalies: bool = False,
    ) -> Figures:
        return self.by_version.get(version, Figures())

    def baseline(
        self,
        model: str,
        version: int,
        sites: Sequence[str],
        before: datetime,
        *,
        span_s: float,
        min_requests: int,
        lookback_s: float,
    ) -> Figures:
        return self.by_version.get(version, Figures())


class World:
    """A hub's services plus agents that do whatever the desired state says."""

    def __init__(self, hub: Any, tiny_onnx: Any) -> None:
        self.ctx = hub.ctx
        self.store = hub.ctx.store
        self.source = FakeSource()
        self.deployments = Deployments(self.store, hub.ctx.registry, hub.ctx.sites, lambda s: None)
        self.controller = self.new_controller()
        for name, labels in LABELS.items():
            hub.ctx.sites.add(name, labels)
        for offset in (1.0, 2.0, 3.0):
            hub.ctx.registry.push(*self._upload(tiny_onnx(offset=offset)), actor="test")
        self.broken: set[tuple[str, int]] = set()
        self.broken_code = "warmup_error"
        self.agents_converge()

    def _upload(self, path: Any) -> tuple[Any, Any]:
        import hashlib

        from modelfleet.hub.registry import PushRequest, Upload

        data = path.read_bytes()
        upload = Upload(path, hashlib.sha256(data).hexdigest(), len(data))
        return PushRequest(name="pump", training_regions=("global",)), upload

    def new_controller(self) -> RolloutController:
        return RolloutController(
            self.deployments, self.source, self.store.leadership("rollout controller")
        )

    def agents_converge(self) -> None:
        """Every site reports what it was told, failing on versions marked broken."""
        for site in self.store.sites.list():
            models = []
            for a in self.store.assignments.list(site.name):
                bad = (site.name, a.version) in self.broken
                models.append(
                    {
                        "name": a.model,
                        "desired_version": a.version,
                        "active_version": None if bad else a.version,
                        "state": "failed" if bad else "ready",
                        "error": {"code": self.broken_code, "message": "boom"} if bad else None,
                    }
                )
            self.store.sites.record_report(site.name, {"models": models}, self.store.now())

    def assigned(self, site: str) -> int | None:
        found = [a.version for a in self.store.assignments.list(site) if a.model == "pump"]
        return found[0] if found else None

    def deploy(self, version: int, **strategy: Any) -> str:
        gates = strategy.pop("gates", {})
        request = DeployRequest(ref=f"pump:{version}", strategy=strategy, gates=gates)
        _, rollout, _ = self.deployments.deploy(request, "admin:test")
        assert rollout is not None
        return rollout.id

    def run(self, rollout_id: str, start: datetime, seconds: float, step: float = 1.0) -> Any:
        t = 0.0
        while t <= seconds:
            self.agents_converge()
            self.controller.tick(start + timedelta(seconds=t))
            t += step
        return self.controller.get(rollout_id)


@pytest.fixture
def world(hub_factory: Any, tiny_onnx: Any) -> World:
    return World(hub_factory(rollout_interval_s=3600), tiny_onnx)


CANARY = {"kind": "canary", "canary": "a", "then": [50, 100], "bake_s": 5}


def first_version(world: World) -> datetime:
    rid = world.deploy(1, bake_s=0)
    r = world.run(rid, world.store.now(), 1)
    assert r.state == "succeeded"
    return world.store.now()


def test_canary_succeeds_in_three_waves(world: World) -> None:
    first_version(world)
    rid = world.deploy(2, **CANARY, gates={"max_error_rate": 0.01, "min_requests": 10})
    r = world.controller.get(rid)
    assert r.waves == [["a"], ["b"], ["c"]]
    assert [world.assigned(s) for s in "abc"] == [2, 1, 1]
    world.source.by_version[2] = Figures(requests=50, errors=0, p99_ms=3.0)
    start = r.step_started_at
    r = world.run(rid, start, 4)
    assert (r.state, r.step) == ("running", 0)  # still baking
    r = world.run(rid, start + timedelta(seconds=5), 0)
    assert (r.state, r.step) == ("running", 1)
    assert [world.assigned(s) for s in "abc"] == [2, 2, 1]
    r = world.run(rid, r.step_started_at + timedelta(seconds=5), 12, step=6)
    assert r.state == "succeeded"
    assert [h["step"] for h in r.history] == [0, 1, 2]
    assert world.deployments.get("pump").stable_version == 2
    assert [world.assigned(s) for s in "abc"] == [2, 2, 2]
    view = world.controller.view(r)
    assert [w["status"] for w in view["waves"]] == ["done", "done", "done"]


def test_failing_gate_rolls_back_moved_sites_only(world: World) -> None:
    first_version(world)
    rid = world.deploy(2, **CANARY, gates={"max_error_rate": 0.01, "min_requests": 10})
    world.source.by_version[2] = Figures(requests=40, errors=12, p99_ms=3.0)
    revision_b = world.store.assignments.revision("b")
    r = world.run(rid, world.controller.get(rid).step_started_at, 1)
    assert r.state == "failed"
    assert r.history[-1]["gate"] == "max_error_rate"
    assert r.history[-1]["figures"]["errors"] == 12
    assert [world.assigned(s) for s in "abc"] == [1, 1, 1]
    assert world.store.assignments.revision("b") == revision_b  # never touched
    view = world.controller.view(r)
    assert [w["status"] for w in view["waves"]] == ["rolled back", "never moved", "never moved"]


def test_activation_failure_fails_fast(world: World) -> None:
    first_version(world)
    world.broken.add(("a", 2))
    rid = world.deploy(2, **CANARY)
    r = world.run(rid, world.controller.get(rid).step_started_at, 0)
    assert r.state == "failed"
    assert r.history[-1]["gate"] == "activation"
    assert "warmup_error" in r.reason
    assert world.assigned("a") == 1


def test_transient_agent_errors_do_not_fail_the_wave(world: World) -> None:
    """An agent that could not reach the hub (e.g. while it restarted) retries by itself."""
    first_version(world)
    world.broken.add(("a", 2))
    world.broken_code = "hub_unreachable"
    rid = world.deploy(2, **CANARY)
    r = world.run(rid, world.controller.get(rid).step_started_at, 0)
    assert r.state == "running"
    assert world.assigned("a") == 2


def test_too_little_traffic_pauses_then_promote(world: World) -> None:
    first_version(world)
    rid = world.deploy(
        2, **{**CANARY, "progress_deadline_s": 10}, gates={"min_requests": 100, "max_p99_ms": 50}
    )
    world.source.by_version[2] = Figures(requests=3, errors=0, p99_ms=3.0)
    start = world.controller.get(rid).step_started_at
    assert world.run(rid, start, 9).state == "running"
    r = world.run(rid, start + timedelta(seconds=10), 0)
    assert r.state == "paused"
    assert r.reason.startswith("inconclusive")
    assert "too little traffic" in r.reason
    with pytest.raises(Conflict, match="already paused"):
        world.controller.act(rid, "pause", "admin:test")
    r = world.controller.act(rid, "promote", "admin:test")
    assert (r.state, r.step) == ("running", 1)
    assert world.assigned("b") == 2
    r = world.controller.act(rid, "abort", "admin:test")
    assert r.state == "aborted"
    assert [world.assigned(s) for s in "abc"] == [1, 1, 1]


def test_restarted_controller_resumes_at_the_same_step(world: World) -> None:
    first_version(world)
    rid = world.deploy(2, **CANARY)
    start = world.controller.get(rid).step_started_at
    r = world.run(rid, start + timedelta(seconds=5), 0)
    assert r.step == 1
    wave_started = r.step_started_at
    # A crash after the transition, before the assignments were written.
    world.store.assignments.set("b", "pump", 1, "pump:1", {})
    world.controller = world.new_controller()  # "restart": no memory but the rows
    world.deployments.sync()
    assert world.assigned("b") == 2
    r = world.controller.get(rid)
    # The same wave, and its bake still counts from when it began, not from the restart.
    assert (r.step, r.step_started_at) == (1, wave_started)
    r = world.run(rid, r.step_started_at + timedelta(seconds=5), 6, step=5)
    assert r.state == "succeeded"
    assert [h["step"] for h in r.history] == [0, 1, 2]


def test_stale_transition_loses_the_compare_and_set(world: World) -> None:
    first_version(world)
    rid = world.deploy(2, **CANARY)
    stale = world.controller.get(rid)
    world.controller.act(rid, "pause", "admin:test")
    r = world.controller.advance(stale, stale.step_started_at + timedelta(seconds=60))
    assert r is None
    assert world.controller.get(rid).state == "paused"


def test_rollback_after_success_and_a_new_deploy_while_busy(world: World) -> None:
    first_version(world)
    rid = world.deploy(2, kind="all-at-once", bake_s=0)
    assert world.run(rid, world.store.now(), 0).state == "succeeded"
    r = world.controller.act(rid, "rollback", "admin:test")
    assert r.state == "rolled_back"
    assert [world.assigned(s) for s in "abc"] == [1, 1, 1]
    busy = world.deploy(3, **CANARY)
    with pytest.raises(Conflict, match=busy):
        world.deploy(2, bake_s=0)


def test_policy_conflict_override(world: World) -> None:
    repo = world.deployments.repo
    repo.put_policy(
        "eu-only",
        "residency",
        {"training_regions": ["global"], "allowed_jurisdictions": ["EU", "US"]},
    )
    with pytest.raises(PolicyViolation, match=r"eu-only.*site\(s\) c:"):
        world.deploy(1, bake_s=0)
    plan = world.deployments.plan(DeployRequest(ref="pump:1"))
    assert [(e.site, e.reason) for e in plan.excluded] == [("c", "policy")]
    repo.delete_policy("eu-only")
    first_version(world)
    world.deployments.pin("b", "pump:3", "tuned for local data")
    assert world.assigned("b") == 3
    other = DeployRequest(ref="pump:2", name="pump-eu", selector="region=eu-west")
    with pytest.raises(Conflict, match="also selected by deployment"):
        world.deployments.deploy(other, "admin:test")
    world.deployments.unpin("b", "pump")
    assert world.assigned("b") == 1


def test_apply_is_idempotent_and_prunes(world: World) -> None:
    applier = FleetApplier(world.ctx.sites, world.deployments)
    doc = {
        "sites": [{"name": n, "labels": labels} for n, labels in LABELS.items()]
        + [{"name": "d", "labels": {"region": "eu-west"}}],
        "policies": [{"name": "spread", "kind": "spread", "label": "provider", "min_distinct": 2}],
        "deployments": [{"model": "pump:1", "to": "provider", "strategy": {"bake_s": 0}}],
        "overrides": [{"site": "c", "model": "pump:3"}],
    }
    first = applier.apply(doc, prune=False, dry_run=False, actor="t").as_dict()
    kinds = sorted((c["kind"], c["action"]) for c in first["changes"])
    assert kinds == [
        ("deployment", "create"),
        ("override", "create"),
        ("policy", "create"),
        ("site", "create"),
    ]
    assert first["changes"][0]["enrollment_token"].startswith("mfe_")
    assert applier.apply(doc, prune=False, dry_run=False, actor="t").as_dict()["changed"] is False
    smaller = {**doc, "overrides": [], "sites": doc["sites"][:3]}
    dry = applier.apply(smaller, prune=True, dry_run=True, actor="t").as_dict()
    assert {(c["kind"], c["name"]) for c in dry["changes"]} == {
        ("override", "c/pump"),
        ("site", "d"),
    }
    assert world.store.sites.get("d") is not None  # dry run changed nothing
    applier.apply(smaller, prune=True, dry_run=False, actor="t")
    assert world.store.sites.get("d") is None
    assert world.deployments.repo.list_overrides() == []


def test_a_decommissioned_site_is_left_alone_until_it_is_assigned_again(world: World) -> None:
    first_version(world)
    world.ctx.sites.decommission("b")
    assert world.assigned("b") is None
    world.deployments.sync()  # the deployment still selects b by its labels
    assert world.assigned("b") is None
    rid = world.deploy(2, kind="all-at-once", bake_s=0)
    assert world.run(rid, world.store.now(), 1).state == "succeeded"
    assert [world.assigned(s) for s in "abc"] == [2, None, 2]
    plan = world.deployments.plan(DeployRequest(ref="pump:3"))
    assert "b" not in {t.site for t in plan.targets}
    assert [(e.site, e.reason) for e in plan.excluded] == [("b", "decommissioned")]
    # An operator's assignment puts it back in service; deployments manage it again.
    world.ctx.sites.assign("b", "pump:1")
    world.deployments.sync()
    assert world.assigned("b") == 2
