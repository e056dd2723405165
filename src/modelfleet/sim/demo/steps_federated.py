"""The scenario's last steps: federated training on data that never leaves the plants, its
model rolled out through the same gates, and the hub's telemetry checked against every answer.
Split from :mod:`modelfleet.sim.demo.steps` only to keep each module short."""

from __future__ import annotations

from modelfleet.api.schedules import ScheduleSaved
from modelfleet.sim.demo.fleet import HUB_REGION, MODEL
from modelfleet.sim.demo.fleet import site_name as site_of
from modelfleet.sim.demo.models import Scores, score
from modelfleet.sim.demo.scene import Scene, followed_rollout, settle
from modelfleet.sim.plant_data import PLANTS

#: The weekly closed loop (docs/pipelines.md), and the states a run ends in.
PIPELINE = "machine-health-weekly"
END_STATES = ("promoted", "kept", "failed")


def federated_training(scene: Scene) -> bool:
    """The weekly loop: a pipeline trains on data that never leaves the plants, registers the
    result as ``candidate``, and moves ``production`` to it only if it beats production on
    the plants' held-out rows. A weekly schedule starts it; the demo starts one run now. The
    scenario ends here when the job registers no result."""
    run, admin, sizes = scene.run, scene.admin, scene.sizes
    # Labels come back from the plants, so the deployment also gates on them: at least 75 %
    # of the new version's answers at a wave's sites right, over at least 50 labels. A floor
    # that stops a broken release (one that says "fails" for every machine scores about
    # 5 %) without judging noise: the federated model trades some plain accuracy for
    # catching more failures, so "no worse than the previous version" is the wrong test.
    # No rollout: the alias has not moved.
    scene.gates = {**scene.gates, "min_accuracy": 0.75, "min_labels": 50}
    admin.deploy({"ref": f"{MODEL}@production", "gates": scene.gates})
    admin.set_pipeline(
        PIPELINE,
        {
            "model": MODEL,
            "train": {
                "model": f"{MODEL}@production",
                "data": "maintenance",
                "rounds": sizes.fl_rounds,
                "strategy": "fedavg",
                "min_sites": 2,
                "local_epochs": 1,
                "lr": 0.1,
                "batch_size": 32,
                "round_timeout_s": 60,
                "wait_for_sites_s": 60,
            },
            # Failures are ~5 % of rows: plain accuracy would prefer a model that never
            # predicts one, so the versions are compared by balanced accuracy, on the rows
            # each consenting plant held out of training (ap-south declined federation,
            # which evaluations honour too).
            "evaluate": {
                "selector": "jurisdiction in (EU,US)",
                "rows": "holdout",
                "metric": "balanced_accuracy",
                "min_samples": 50,
                "deadline_s": 120,
            },
        },
    )
    weekly = admin.set_schedule(
        "weekly-retrain",
        {
            "cron": "0 3 * * MON",
            "timezone": "Europe/Berlin",
            "action": {"kind": "pipeline", "pipeline": PIPELINE},
        },
    )
    started = admin.run_pipeline(PIPELINE)
    run.event(
        f"pipeline {PIPELINE}: weekly on Mondays 03:00 Europe/Berlin (next "
        f"{_slot(weekly)}); run {started.id} started now, {sizes.fl_rounds} rounds of FedAvg"
    )
    run.wait(
        lambda: admin.get_pipeline_run(PIPELINE, started.id).state in END_STATES,
        300,
        "pipeline run",
    )
    pipeline_run = admin.get_pipeline_run(PIPELINE, started.id)
    run.figures["pipeline"] = pipeline_run.model_dump(mode="json")
    run.event(f"pipeline run {pipeline_run.id}: {pipeline_run.state} — {pipeline_run.message}")
    view = admin.get_federated_job(pipeline_run.job)
    consent = admin.get_federation_consents()
    rounds = [
        {
            "round": r["round"],
            "sites": sorted(u["site"] for u in r["updates"] if u["kind"] == "update"),
            "examples": sum(u["num_examples"] or 0 for u in r["updates"]),
            "metrics": r["metrics"],
            "duration_s": r["duration_s"],
        }
        for r in view.get("round_details", [])
        if r["state"] == "closed"
    ]
    run.figures["federated"] = {
        "job": pipeline_run.job,
        "state": view["state"],
        "result_version": view["result_version"],
        "rounds": rounds,
        "declined": {
            s: c.get("reason") for s, c in consent.items() if not c.get("participate", True)
        },
    }
    run.check(
        "federated_registered",
        view["state"] == "completed" and view["result_version"] is not None,
        f"job {view['state']}, result {MODEL}:{view['result_version']}",
    )
    run.check(
        "pipeline_promoted",
        pipeline_run.state == "promoted" and pipeline_run.promoted_version is not None,
        f"candidate {MODEL}:{pipeline_run.candidate_version} beat production "
        f"{MODEL}:{pipeline_run.production_version} on the held-out rows; production moved",
    )
    if view["result_version"] is None or pipeline_run.state != "promoted":
        return False
    scene.fl_version = int(view["result_version"])
    return True


def _slot(schedule: ScheduleSaved) -> str:
    slot = schedule.next_slot
    return slot.strftime("%a %Y-%m-%d %H:%M %Z") if slot is not None else "none"


def federated_rollout(scene: Scene) -> bool:
    """The federated model against the central one on each plant's held-out data (the demo's
    own scoring, all three plants), then rolled out through the same canary and gates by the
    deployment that follows production."""
    run, admin, fl_version = scene.run, scene.admin, scene.fl_version
    fl_path = scene.workdir / "federated.onnx"
    admin.pull(f"{MODEL}:{fl_version}", fl_path)
    accuracy: dict[str, dict[str, Scores]] = {}
    for name in PLANTS:
        x_h, y_h = scene.data[name]["holdout"]
        accuracy[name] = {
            "central": score(scene.central_path, x_h, y_h),
            "federated": score(fl_path, x_h, y_h),
        }
    run.figures["accuracy"] = {
        n: {k: s.__dict__ for k, s in v.items()} for n, v in accuracy.items()
    }
    run.event(
        "held-out balanced accuracy central -> federated: "
        + ", ".join(
            f"{n} {v['central'].balanced_accuracy:.3f} -> {v['federated'].balanced_accuracy:.3f}"
            for n, v in accuracy.items()
        )
    )
    # The pipeline moved production; the deployment that follows it rolls the new version
    # out by itself.
    fl_rollout = followed_rollout(run, admin, fl_version)
    fl_state = settle(run, admin, fl_rollout, 120)
    canary_verdict = next((h["message"] for h in fl_state["history"] if h.get("step") == 0), "")
    run.event(
        f"rollout {fl_rollout} of {MODEL}:{fl_version}: {fl_state['state']}"
        + (f"; canary: {canary_verdict}" if canary_verdict else "")
        + (f" — {fl_state['reason']}" if fl_state["state"] != "succeeded" else "")
    )
    run.check(
        "federated_rolled_out",
        fl_state["state"] == "succeeded",
        "production moved, the following deployment rolled it out through the canary",
    )
    return True


def telemetry(scene: Scene) -> bool:
    """The lines stop; the hub must count exactly what was answered."""
    run, admin, lines = scene.run, scene.admin, scene.lines
    for line in lines.values():
        line.stop()
    for line in lines.values():
        line.join(15)
    answered = {site_of(n): 0 for n in PLANTS}
    for line in lines.values():
        stats = line.snapshot()
        for site, count in stats.served_by.items():
            answered[site] = answered.get(site, 0) + count
        answered[site_of(HUB_REGION)] += stats.central_answers
    totals: dict[str, int] = {}

    def complete() -> bool:
        status = admin.get_telemetry_status()
        totals.clear()
        totals.update({row["site"]: int(row["requests_total"]) for row in status["sites"]})
        return all(totals.get(s) == n for s, n in answered.items())

    run.wait(complete, 30 + scene.sizes.window_s * 4, "telemetry")
    run.figures["telemetry"] = {"answered": answered, "hub_totals": dict(totals)}
    run.check(
        "telemetry_complete",
        all(totals.get(s) == n for s, n in answered.items()),
        f"hub totals {totals} == requests answered {answered}",
    )
    return True
