"""Pipelines on an in-process hub, with sites played over HTTP by their tokens: the run's
state machine step by step (two service instances on one store standing for two replicas,
or a hub restarted mid-run), the outcomes promoted / kept / failed with their reasons, and
bad input refused with the reason.

The real processes, the schedule and the rollout are in test_pipeline_e2e.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from modelfleet.federation import wire
from modelfleet.federation.specs import ModelSpec, build_onnx, init_weights
from modelfleet.hub.pipelines import Pipelines

CONSENT = {"participate": True, "datasets": ["iris"]}
SPEC = ModelSpec(family="softmax", features=4, classes=3)
PIPELINE = {
    "model": "iris",
    "train": {
        "model": "iris@production",
        "data": "iris",
        "rounds": 1,
        "min_sites": 2,
        "sites": "role=train",
    },
    "evaluate": {"selector": "role=holdout", "min_samples": 5, "margin": 0.05},
}


@pytest.fixture
def hub(hub_factory, tmp_path: Path):
    return make_hub(hub_factory, tmp_path)


def make_hub(hub_factory, tmp_path: Path, **settings: Any):
    """Model ``iris`` v1 = production; sites t1, t2 (role=train) and h1 (role=holdout),
    reporting and consenting. The pipeline loop is slow here: the test takes the steps."""
    made = hub_factory(schedule_interval_s=60, **settings)
    path = tmp_path / "iris.onnx"
    onnx.save(build_onnx(SPEC, init_weights(SPEC)), str(path))
    made.client.post(
        "/api/v1/models/iris/versions",
        params={"alias": "production"},
        content=path.read_bytes(),
        headers=made.headers(),
    ).raise_for_status()
    made.site_tokens = {}
    for name, role in (("t1", "train"), ("t2", "train"), ("h1", "holdout")):
        _, secret = made.ctx.sites.add(name, {"role": role})
        token = made.ctx.sites.enroll(secret).token
        made.site_tokens[name] = token
        h = made.headers(token)
        made.client.post(f"/api/v1/sites/{name}/report", json={}, headers=h).raise_for_status()
        made.client.put(
            f"/api/v1/federation/sites/{name}/consent", json=CONSENT, headers=h
        ).raise_for_status()
    return made


def put(hub, name: str, body: dict[str, Any], token: str | None = None):
    return hub.client.put(f"/api/v1/pipelines/{name}", json=body, headers=hub.headers(token))


def start(hub, name: str = "weekly") -> dict[str, Any]:
    answer = hub.client.post(f"/api/v1/pipelines/{name}/runs", headers=hub.headers())
    assert answer.status_code == 201, answer.text
    return answer.json()


def get_run(hub, run_id: str, name: str = "weekly") -> dict[str, Any]:
    answer = hub.client.get(f"/api/v1/pipelines/{name}/runs/{run_id}", headers=hub.headers())
    assert answer.status_code == 200, answer.text
    return answer.json()


def train(hub, job_id: str) -> None:
    """Both training sites send their update for round 1: the job completes."""
    for site in ("t1", "t2"):
        update = wire.pack(
            {"attempt": 1, "num_examples": 10, "metrics": {"train_loss": 0.5}},
            {"delta": np.full(SPEC.size(), 0.1, np.float32)},
        )
        answer = hub.client.post(
            f"/api/v1/federation/jobs/{job_id}/rounds/1/updates",
            content=update,
            headers=hub.headers(hub.site_tokens[site]),
        )
        assert answer.status_code == 200, answer.text
    hub.ctx.federation.advance(job_id)
    assert hub.ctx.federation.job(job_id).state == "completed"


def answer(hub, evaluation: str, scores: dict[str, tuple[int, int]]) -> None:
    """h1's counts: ``{version: (rows, right)}``."""
    body = {"scores": {v: {"count": c, "total": t} for v, (c, t) in scores.items()}}
    posted = hub.client.post(
        f"/api/v1/evaluations/{evaluation}/results",
        json=body,
        headers=hub.headers(hub.site_tokens["h1"]),
    )
    assert posted.status_code == 200, posted.text


def replica(hub) -> Pipelines:
    """A second pipelines service on the same store: another replica, or this hub after a
    restart (nothing of the first one's memory)."""
    c = hub.ctx
    return Pipelines(c.store, c.registry, c.federation, c.evaluations, c.events)


def events(hub, kind: str) -> list[dict[str, Any]]:
    listed = hub.client.get(
        "/api/v1/events", params={"type": kind, "limit": 1000}, headers=hub.headers()
    )
    return list(listed.json())


def test_a_run_trains_evaluates_and_promotes_once_across_two_replicas(hub) -> None:
    promote_once(hub)


def test_the_same_on_postgresql(hub_factory, tmp_path: Path, postgres_url: str) -> None:
    promote_once(make_hub(hub_factory, tmp_path, db=postgres_url))


def promote_once(hub) -> None:
    saved = put(hub, "weekly", PIPELINE)
    assert saved.status_code == 200, saved.text
    assert saved.json()["candidate_alias"] == "candidate"
    run = start(hub)
    assert run["state"] == "training"
    assert run["job"] == run["id"]
    job = hub.ctx.federation.job(run["id"])
    assert job.config["alias"] == "candidate"
    assert job.config["sites"] == "role=train"
    # A second start of the same run (a resumed fire) finds it: no second run or job.
    again = replica(hub).start_run("weekly", actor="schedule:x", run_id=run["id"])
    assert again.started_by == run["started_by"]
    assert len(hub.ctx.federation.jobs()) == 1

    train(hub, run["id"])
    other = replica(hub)
    # A hub that died after starting the evaluation but before recording it: the
    # evaluation exists under the run's actor; the next step adopts it.
    orphan = hub.ctx.evaluations.start(
        "iris", ["2", "1"], "role=holdout", actor=f"pipeline:weekly/{run['id']}", min_samples=5
    )
    other.advance(run["id"])
    hub.ctx.pipelines.advance(run["id"])
    evaluating = get_run(hub, run["id"])
    assert evaluating["state"] == "evaluating"
    assert evaluating["evaluation"] == orphan.id
    assert (evaluating["candidate_version"], evaluating["production_version"]) == (2, 1)
    assert len(hub.ctx.evaluations.list(model="iris")) == 1

    hub.ctx.pipelines.advance(run["id"])  # the evaluation still runs: nothing to do
    assert get_run(hub, run["id"])["state"] == "evaluating"
    answer(hub, orphan.id, {"2": (100, 90), "1": (100, 40)})
    other.advance(run["id"])
    hub.ctx.pipelines.advance(run["id"])
    other.advance(run["id"])
    done = get_run(hub, run["id"])
    assert done["state"] == "promoted", done["message"]
    assert done["promoted_version"] == 2
    assert done["scores"] == {"metric": "accuracy", "candidate": 0.9, "production": 0.4}
    assert "0.9000 vs production iris:1 0.4000" in done["message"]
    model = hub.client.get("/api/v1/models/iris", headers=hub.headers()).json()
    assert model["aliases"] == {"candidate": 2, "production": 2}
    moved = [e for e in events(hub, "model.alias_moved") if e["subject"] == "iris@production"]
    by_pipeline = [e["payload"] for e in moved if e["payload"]["by"] == "pipeline:weekly"]
    assert [(p["from_version"], p["to_version"]) for p in by_pipeline] == [(1, 2)]
    told = [e["type"] for e in events(hub, "pipeline.*")]
    assert sorted(told) == ["pipeline.promoted", "pipeline.started"]
    audit = hub.client.get("/api/v1/audit", headers=hub.headers()).json()
    assert any(
        a["actor"] == "pipeline:weekly" and a["action"] == "model.alias" and a["outcome"] == "ok"
        for a in audit
    )
    listed = hub.client.get("/api/v1/pipelines", headers=hub.headers()).json()
    assert listed[0]["last_run"]["state"] == "promoted"


def test_a_candidate_that_does_not_beat_production_is_kept_with_both_scores(hub) -> None:
    put(hub, "weekly", PIPELINE).raise_for_status()
    run = start(hub)
    train(hub, run["id"])
    hub.ctx.pipelines.run_pass()
    evaluation = get_run(hub, run["id"])["evaluation"]
    answer(hub, evaluation, {"2": (100, 62), "1": (100, 60)})  # better, but by < margin
    hub.ctx.pipelines.run_pass()
    kept = get_run(hub, run["id"])
    assert kept["state"] == "kept"
    assert "0.6200 vs production iris:1 0.6000" in kept["message"]
    assert "does not beat it by more than 0.05" in kept["message"]
    model = hub.client.get("/api/v1/models/iris", headers=hub.headers()).json()
    assert model["aliases"]["production"] == 1
    assert [e["type"] for e in events(hub, "pipeline.kept")] == ["pipeline.kept"]


def test_no_incumbent_fails_the_run_by_the_documented_rule(hub) -> None:
    body = {**PIPELINE, "train": {**PIPELINE["train"], "model": "iris:1"}, "promote_alias": "prod"}
    put(hub, "first", body).raise_for_status()
    run = start(hub, "first")
    train(hub, run["id"])
    hub.ctx.pipelines.run_pass()
    failed = get_run(hub, run["id"], "first")
    assert failed["state"] == "failed"
    assert "no iris@prod to compare iris:2 with" in failed["message"]
    assert "never promotes without a comparison" in failed["message"]


def test_an_aborted_job_fails_the_run(hub) -> None:
    put(hub, "weekly", PIPELINE).raise_for_status()
    run = start(hub)
    hub.client.post(
        f"/api/v1/federation/jobs/{run['id']}/abort", headers=hub.headers()
    ).raise_for_status()
    hub.ctx.pipelines.run_pass()
    failed = get_run(hub, run["id"])
    assert failed["state"] == "failed"
    assert f"federated job {run['id']} aborted" in failed["message"]
    assert [e["type"] for e in events(hub, "pipeline.failed")] == ["pipeline.failed"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({**PIPELINE, "model": "ghost"}, 404, "model 'ghost' does not exist"),
        ({**PIPELINE, "train": {**PIPELINE["train"], "id": "x"}}, 400, "must not name an id"),
        ({**PIPELINE, "train": {**PIPELINE["train"], "rounds": 0}}, 400, "invalid federated job"),
        ({**PIPELINE, "train": {**PIPELINE["train"], "bogus": 1}}, 400, "invalid federated job"),
        ({**PIPELINE, "train": {**PIPELINE["train"], "model": "other@x"}}, 400, "not the pipeline"),
        ({**PIPELINE, "train": {**PIPELINE["train"], "alias": "c2"}}, 400, "candidate_alias"),
        ({**PIPELINE, "evaluate": {"selector": "role in ("}}, 400, "selector"),
        ({**PIPELINE, "evaluate": {"selector": "a=b", "margin": -1}}, 400, "margin"),
        ({**PIPELINE, "evaluate": {"selector": "a=b", "deadline_s": 1e9}}, 400, "deadline_s"),
        ({**PIPELINE, "promote_alias": "candidate"}, 400, "both 'candidate'"),
        ({**PIPELINE, "promote_alias": "a b"}, 400, "promote_alias"),
        ({**PIPELINE, "surprise": True}, 400, "surprise"),
    ],
)
def test_bad_pipelines_are_refused_with_the_reason(hub, body, status, needle) -> None:
    answer = put(hub, "p", body)
    assert answer.status_code == status, answer.text
    assert needle in answer.json()["error"]["message"]
    assert hub.client.get("/api/v1/pipelines", headers=hub.headers()).json() == []


def test_roles_unknown_names_and_the_schedule_action(hub) -> None:
    viewer = hub.token("viewer")
    assert put(hub, "p", PIPELINE, token=viewer).status_code == 403
    put(hub, "p", PIPELINE).raise_for_status()
    assert hub.client.get("/api/v1/pipelines/p", headers=hub.headers(viewer)).status_code == 200
    refused = hub.client.post("/api/v1/pipelines/p/runs", headers=hub.headers(viewer))
    assert refused.status_code == 403
    missing = hub.client.get("/api/v1/pipelines/p/runs/nope", headers=hub.headers())
    assert missing.status_code == 404
    assert hub.client.post("/api/v1/pipelines/ghost/runs", headers=hub.headers()).status_code == 404
    schedule = {"cron": "0 3 * * MON", "timezone": "UTC", "action": {"kind": "pipeline"}}
    bad = hub.client.put(
        "/api/v1/schedules/s",
        json={**schedule, "action": {"kind": "pipeline", "pipeline": "ghost"}},
        headers=hub.headers(),
    )
    assert bad.status_code == 400
    assert "unknown pipeline in the action" in bad.json()["error"]["message"]
    good = hub.client.put(
        "/api/v1/schedules/s",
        json={**schedule, "action": {"kind": "pipeline", "pipeline": "p"}},
        headers=hub.headers(),
    )
    assert good.status_code == 200, good.text
    assert good.json()["action"] == {"kind": "pipeline", "pipeline": "p"}
    gone = hub.client.delete("/api/v1/pipelines/p", headers=hub.headers())
    assert gone.status_code == 204
    assert hub.client.get("/api/v1/pipelines/p", headers=hub.headers()).status_code == 404


def test_a_trigger_starts_one_run_per_fire(hub, tmp_path: Path) -> None:
    put(hub, "weekly", PIPELINE).raise_for_status()
    saved = hub.client.put(
        "/api/v1/triggers/on-push",
        json={
            "condition": {"kind": "new_version", "model": "iris"},
            "action": {"kind": "pipeline", "pipeline": "weekly"},
        },
        headers=hub.headers(),
    )
    assert saved.status_code == 200, saved.text
    path = tmp_path / "v2.onnx"
    # Softmax weights start at zero whatever the seed: shift them, or these are v1's bytes
    # again, which the hub answers as the retry of v1 (no new version, nothing to fire on).
    weights = {k: v + 0.25 for k, v in init_weights(SPEC).items()}
    onnx.save(build_onnx(SPEC, weights), str(path))
    hub.client.post(
        "/api/v1/models/iris/versions", content=path.read_bytes(), headers=hub.headers()
    ).raise_for_status()
    hub.ctx.triggers.run_pass()
    hub.ctx.triggers.run_pass()  # the condition was consumed: no second fire, no second run
    runs = hub.client.get("/api/v1/pipelines/weekly/runs", headers=hub.headers()).json()
    assert len(runs) == 1
    assert runs[0]["id"].startswith("t-on-push-")
    assert runs[0]["started_by"] == "trigger:on-push"
    fires = hub.client.get("/api/v1/triggers/on-push/fires", headers=hub.headers()).json()
    assert [(f["state"], f["job"]) for f in fires] == [("fired", runs[0]["id"])]
