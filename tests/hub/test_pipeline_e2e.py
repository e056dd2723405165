"""The closed loop with real processes: one hub on the test clock, three site agents (two
train, one held out and only evaluates), a real webhook receiver subscribed to ``*``.

Version 1 (``production``) is deliberately weak (untrained); the fleet file of
docs/pipelines.md (with a 1 s bake and 3 rounds) declares the following deployment with its
canary and gates, the pipeline and the weekly schedule. The test writes "next Monday 03:00
Europe/Berlin" into the clock file, and then: the schedule fires once, the federated job
runs on the two training sites, its result becomes ``candidate``, the held-out site's
evaluation finds it better, ``production`` moves, the deployment rolls it out through its
canary (with live traffic for the gates), and the receiver got every event of the chain
exactly once with a valid signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelfleet.errors import NotFound
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess, wait_http
from tests.conftest import trust_fleet_ca
from tests.hub.pipeline_support import (
    doc_fleet_file,
    labelled,
    quick,
    site_config,
    weak_model,
    write_csv,
)
from tests.waiting import wait_for
from tests.webhook_receiver import receiver

SECRET = "a-pipeline-webhook-secret"
MODEL = "machine-health"
PIPELINE = "machine-health-weekly"
SITES = {"plant-a": "train", "plant-b": "train", "plant-c": "holdout"}
SITE_ENV = {
    "MODELFLEET_SITE_RETRY_MAX_S": "1",
    "MODELFLEET_SITE_TELEMETRY_WINDOW_S": "1",
    "MODELFLEET_SITE_TELEMETRY_SHIP_INTERVAL_S": "0.5",
}
CHAIN = [
    "schedule.fired",
    "pipeline.started",
    "fl.job_finished",
    "model.registered",
    "evaluation.completed",
    "model.alias_moved",
    "pipeline.promoted",
    "deployment.follow_started",
    "rollout.started",
    "rollout.wave_passed",
    "rollout.succeeded",
]
#: Events the chain tells more than once (the rest: once; wave_passed: once per wave).
TIMES = {"model.alias_moved": 2}


@contextmanager
def traffic(sites: list[SiteProcess], token: str) -> Iterator[None]:
    """Real inference requests to every site, ~20/s each, for the rollout gates."""
    stop = threading.Event()
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}

    def run(url: str) -> None:
        with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {token}"}) as http:
            while not stop.is_set():
                with suppress(httpx.TransportError):
                    http.post(f"{url}/v2/models/{MODEL}/infer", json=body)
                stop.wait(0.05)

    threads = [threading.Thread(target=run, args=(s.url,), daemon=True) for s in sites]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)


def finished(admin: HubClient, run_id: str) -> bool:
    try:
        return admin.get_pipeline_run(PIPELINE, run_id).state in ("promoted", "kept", "failed")
    except NotFound:
        return False  # the schedule has not fired yet


def cli(hub: HubProcess, token: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "modelfleet", *args, "--hub", hub.url, "--token", token],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def signed(request: dict[str, Any]) -> bool:
    ts = request["headers"]["x-modelfleet-timestamp"]
    mac = hmac.new(SECRET.encode(), ts.encode() + b"." + request["body"], hashlib.sha256)
    return hmac.compare_digest(
        request["headers"]["x-modelfleet-signature"], "sha256=" + mac.hexdigest()
    )


def test_a_weekly_run_trains_evaluates_promotes_and_rolls_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    began = time.monotonic()
    init = init_hub(tmp_path / "hub")
    clock = tmp_path / "clock"
    clock.write_text("2031-01-05T12:00:00+01:00")  # Sunday noon in Berlin
    hub = HubProcess(
        tmp_path / "hub",
        extra_env={
            "MODELFLEET_HUB_TEST_CLOCK_FILE": str(clock),
            "MODELFLEET_HUB_SCHEDULE_INTERVAL_S": "0.2",
            "MODELFLEET_HUB_ROLLOUT_INTERVAL_S": "0.3",
        },
    ).start(timeout=60)
    trust_fleet_ca(monkeypatch, hub.ca_file)
    admin = HubClient(hub.url, init.admin_token)
    sites: list[SiteProcess] = []
    try:
        admin.push(weak_model(tmp_path / "v1.onnx"), MODEL, alias="production")
        for i, (name, role) in enumerate(SITES.items()):
            data = write_csv(tmp_path / f"{name}.csv", *labelled(20 + i, 300))
            token = admin.add_site(name, {"role": role})["enrollment_token"]
            env = {
                **SITE_ENV,
                "MODELFLEET_SITE_CONFIG_FILE": str(site_config(tmp_path, name, data)),
            }
            sites.append(
                SiteProcess(tmp_path / f"site-{name}", hub.url, token, extra_env=env).start(
                    wait_ready=False
                )
            )
        for site in sites:
            wait_http(f"{site.url}/v2/health/ready", 60, site.proc)

        def ready() -> bool:
            online = {s.name for s in admin.list_sites() if s.online}
            return set(SITES) <= online and set(SITES) <= set(admin.get_federation_consents())

        wait_for(ready, "every site online with its consent")
        infer = admin.create_token("traffic", "infer").token

        with receiver(200) as rec, traffic(sites, infer):
            admin.create_webhook(rec.url + "/hook", ["*"], secret=SECRET)
            applied = admin.apply_fleet(quick(doc_fleet_file()))
            assert {(c.kind, c.action) for c in applied.changes} == {
                ("deployment", "create"),
                ("pipeline", "create"),
                ("schedule", "create"),
            }
            assert admin.get_schedule("weekly-retrain").next_slot is not None
            first = admin.list_rollouts()[0]
            wait_for(
                lambda: any(
                    e.subject == first.id
                    for e in admin.list_events(types=["rollout.succeeded"], limit=1000)
                ),
                "version 1 rolled out by the applied deployment",
            )
            before = max(e.id for e in admin.list_events(limit=1000))

            # Monday 03:00 in Berlin arrives.
            clock.write_text("2031-01-06T03:00:01+01:00")
            run_id = "s-weekly-retrain-20310106T020000Z"

            wait_for(lambda: finished(admin, run_id), "the pipeline run to finish", timeout=180)
            run = admin.get_pipeline_run("machine-health-weekly", run_id)
            assert run.state == "promoted", run.message
            assert (run.candidate_version, run.production_version) == (2, 1)
            assert run.scores.candidate is not None
            assert run.scores.production is not None
            assert run.scores.candidate > run.scores.production + 0.02
            assert admin.get_federated_job(run_id)["state"] == "completed"
            detail = admin.request("GET", f"/api/v1/models/{MODEL}").json()
            assert detail["aliases"] == {"candidate": 2, "production": 2}
            evaluation = admin.get_evaluation(run.evaluation or "")
            assert set(evaluation.sites) == {"plant-c"}  # the held-out site only

            def rolled_out() -> bool:
                latest = admin.list_rollouts()[0]
                return latest.to_version == 2 and latest.state in ("succeeded", "failed")

            wait_for(rolled_out, "the following deployment's rollout of version 2", timeout=120)
            rollout = admin.list_rollouts()[0]
            assert rollout.state == "succeeded", rollout
            assert rollout.created_by == "follow"
            waves = rollout.steps
            assert waves == 2  # the canary plant-c, then every site

            chain = admin.list_events(after=before, limit=1000)
            # The rollout's events are those of the rollout to version 2 (by its id).
            wanted = [
                e
                for e in chain
                if e.type in CHAIN
                and (not e.type.startswith("rollout.") or e.subject == rollout.id)
            ]
            by_type = Counter(e.type for e in wanted)
            # Two alias moves: the job's result registered as candidate, then production.
            assert by_type == {t: TIMES.get(t, 1) for t in CHAIN} | {
                "rollout.wave_passed": waves
            }, by_type
            assert {e.subject for e in wanted if e.type == "model.alias_moved"} == {
                f"{MODEL}@candidate",
                f"{MODEL}@production",
            }
            # Every event the hub logged since the clock moved reached the receiver exactly
            # once, signed with the webhook's secret.
            ids = {e.id for e in chain}
            wait_for(lambda: ids <= set(rec.ids()), "every event at the receiver", timeout=60)
            got = [r for r in rec.got if int(r["headers"]["x-modelfleet-event-id"]) in ids]
            assert sorted(int(r["headers"]["x-modelfleet-event-id"]) for r in got) == sorted(ids)
            assert all(signed(r) for r in got)
            delivered = {int(r["headers"]["x-modelfleet-event-id"]): r["body"] for r in got}
            assert Counter(json.loads(delivered[e.id])["type"] for e in wanted) == by_type
            moved = next(
                e
                for e in wanted
                if e.type == "model.alias_moved" and e.subject.endswith("@production")
            )
            assert moved.payload["by"] == "pipeline:machine-health-weekly"
            assert moved.subject == f"{MODEL}@production"
            audit = [a for a in admin.list_audit() if a.action == "model.alias"]
            assert any(a.actor == "pipeline:machine-health-weekly" for a in audit)
            fires = admin.list_schedule_fires("weekly-retrain")
            assert [(f.state, f.job) for f in fires] == [("fired", run_id)]
            shown = cli(hub, init.admin_token, "pipeline", "show", PIPELINE, run_id)
            assert "promoted" in shown
            assert "v2 vs v1" in shown
            assert run_id in cli(hub, init.admin_token, "pipeline", "runs", PIPELINE)

            # The hub SIGKILLed while a run evaluates: after the restart it ends once. The
            # held-out site is killed first, so the evaluation waits for it: the hub still
            # counts it online (offline_after_s, 30 s) and selects it; it answers once it
            # is back, after the hub's restart.
            held_out = sites[2]
            held_out.kill()
            second = admin.run_pipeline(PIPELINE).id
            wait_for(
                lambda: admin.get_pipeline_run(PIPELINE, second).state != "training",
                "the second run's federated job",
                timeout=150,
            )
            evaluating = admin.get_pipeline_run(PIPELINE, second)
            assert evaluating.state == "evaluating", (
                evaluating.message,
                admin.get_federated_job(second)["message"],
            )
            hub.kill()
            hub.start(timeout=60)
            held_out.start(wait_ready=False)
            wait_for(lambda: finished(admin, second), "the second run to finish", timeout=120)
            ended = admin.get_pipeline_run(PIPELINE, second)
            assert ended.state in ("promoted", "kept"), ended.message
            actor = f"pipeline:{PIPELINE}/{second}"
            assert [e.created_by for e in admin.list_evaluations(MODEL)].count(actor) == 1

            def told() -> list[str]:
                return sorted(
                    e.type
                    for e in admin.list_events(after=before, types=["pipeline.*"], limit=1000)
                    if e.payload.get("run") == second
                )

            # The event follows the state's compare-and-set by a moment: wait for it.
            wait_for(lambda: f"pipeline.{ended.state}" in told(), "the run's outcome event")
            assert told() == sorted(["pipeline.started", f"pipeline.{ended.state}"])

            # `pipeline run --wait` exits 0 once a run is promoted or kept.
            waited = json.loads(cli(hub, init.admin_token, "pipeline", "run", PIPELINE, "--wait",
                                    "--json"))  # fmt: skip
            assert waited["state"] in ("promoted", "kept"), waited["message"]
            assert PIPELINE in cli(hub, init.admin_token, "pipeline", "ls")
    finally:
        for site in sites:
            site.stop()
        admin.close()
        hub.stop()
        print(f"closed loop e2e: {time.monotonic() - began:.1f} s")
