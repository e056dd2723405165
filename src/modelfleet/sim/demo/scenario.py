"""The smart-factory scenario, step by step; every figure in the summary is measured here."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from modelfleet.errors import ModelfleetError
from modelfleet.monitoring.profiles import profile_array
from modelfleet.sim.demo.fleet import (
    CENTRAL_DELAY_S,
    FL_REFUSAL,
    HUB_REGION,
    MODEL,
    DemoFleet,
    write_dataset,
)
from modelfleet.sim.demo.fleet import site_name as site_of
from modelfleet.sim.demo.models import (
    Scores,
    calibrated_slow_variant,
    oversample,
    score,
    train_central,
)
from modelfleet.sim.demo.progress import Run, Sizes
from modelfleet.sim.demo.report import render
from modelfleet.sim.demo.traffic import PlantLine, percentile
from modelfleet.sim.plant_data import FEATURES, PLANTS, generate

DRIFT_PLANT = "eu-west"
DRIFT_FEATURE = "air_temperature_k"
DRIFT_K = 4.0  # the sensor reads 4 K high: about two standard deviations

#: The rollout gates: p99 at most this many times the previous version's at the same sites...
P99_RATIO = 3.0
#: ...judged once each side has this many requests (below ~100 a p99 is nearly the maximum).
MIN_REQUESTS = 50
#: The regressed release computes at least this many times v1's measured p99 per row, and at
#: least the floor (so v1's sub-millisecond p99 on a fast machine still gives a clear case).
REGRESSION_FACTOR = 20.0
REGRESSION_FLOOR_MS = 100.0


def run_demo(*, keep: bool = False, fast: bool = False, json_out: bool = False) -> bool:
    console = Console(stderr=json_out)
    sizes = Sizes.pick(fast)
    run = Run(console)
    workdir = Path(tempfile.mkdtemp(prefix="modelfleet-demo-"))
    fleet = DemoFleet(workdir, telemetry_window_s=sizes.window_s)
    lines: dict[str, PlantLine] = {}
    console.rule("[bold]modelfleet demo: predictive maintenance in three plants")
    try:
        try:
            _scenario(run, fleet, lines, sizes, workdir)
        except ModelfleetError as exc:
            run.check("completed", False, f"the demo stopped: {exc.message}")
        finally:
            for line in lines.values():
                line.stop()
        summary = _summary(run, fleet, lines, workdir)
        if json_out:
            print(json.dumps(summary, indent=2, default=str))
        else:
            render(console, summary)
        ok = bool(run.checks) and all(run.checks.values())
        if keep and fleet.hub is not None:
            console.print(
                f"\nThe fleet stays up. export MODELFLEET_HUB_URL={fleet.hub.url} "
                f"MODELFLEET_TOKEN={fleet.token}\nthen try: modelfleet status, modelfleet site "
                f"ls, modelfleet rollout ls, modelfleet drift {MODEL}, modelfleet fl ls. "
                "Ctrl-C stops it."
            )
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass  # Ctrl-C ends --keep; the fleet is closed below
    finally:
        # Whatever happened (a bug, Ctrl-C), no process of the fleet outlives the demo.
        fleet.close()
    if ok and not keep:
        shutil.rmtree(workdir, ignore_errors=True)  # kept on failure: logs are in there
    return ok


def _scenario(
    run: Run, fleet: DemoFleet, lines: dict[str, PlantLine], sizes: Sizes, workdir: Path
) -> None:
    # 1. Data: each plant's own conditions; its local data stays on its side.
    data: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for i, (name, plant) in enumerate(PLANTS.items()):
        data[name] = {
            "history": generate(plant, sizes.history, seed=100 + i),
            "local": generate(plant, sizes.local, seed=200 + i),
            "holdout": generate(plant, sizes.holdout, seed=300 + i),
            # A line's requests come from many machines, not one machine's consecutive
            # readings: shuffled, so each window is a fair sample of the plant.
            "stream": _shuffled(generate(plant, 5000, seed=400 + i), seed=i),
        }
    run.event(
        "data: three plants (AI4I 2020-style sensors; failure rates "
        + ", ".join(f"{n} {d['local'][1].mean():.1%}" for n, d in data.items())
        + ")"
    )

    # 2. Central training in the hub's region on the pooled history of the plants whose
    #    data may be pooled (ap-south's may not leave India: policy below).
    pooled = [n for n in PLANTS if n != "ap-south"]
    x_hist = np.vstack([data[n]["history"][0] for n in pooled])
    y_hist = np.concatenate([data[n]["history"][1] for n in pooled])
    _, central_path = train_central(
        x_hist, y_hist, epochs=sizes.epochs, path=workdir / "central.onnx"
    )
    fleet.start_hub()
    admin = fleet.client
    v1 = admin.push(
        central_path,
        MODEL,
        training_regions=pooled,
        alias="production",
        description="central MLP on pooled history",
    )
    admin.put_reference_profile(
        MODEL, v1["version"], profile_array(x_hist, labels=FEATURES).to_dict()
    )
    # The plants differ a little by design and production sample sizes make KS flag
    # negligible shifts: this team acts on PSI >= 0.35 over the last few windows only.
    admin.set_drift_thresholds(MODEL, {"psi": 0.35, "ks_pvalue": 0.0, "window_s": sizes.drift_s})
    run.event(
        f"trained centrally on {len(y_hist)} pooled rows from {', '.join(pooled)}; pushed "
        f"{MODEL}:{v1['version']} @production, signed, reference profile (sketches only)"
    )

    # 3. Fleet: three site processes, each behind its plant LAN link; central links for the
    #    comparison; a residency policy; the plan; a canary rollout with gates.
    for name, plant in PLANTS.items():
        x_local, y_local = oversample(*data[name]["local"])
        write_dataset(workdir / f"{name}-local.csv", x_local, y_local)
        fleet.start_site(plant, workdir / f"{name}-local.csv")
    fleet.start_central_links()
    run.event("fleet up: hub + 3 site agents (" + ", ".join(site_of(n) for n in PLANTS) + ")")
    admin.apply_policies(
        [
            {
                "name": "in-data-stays-in-in",
                "kind": "residency",
                "training_regions": ["ap-south"],
                "allowed_jurisdictions": ["IN"],
            },
            {"name": "two-providers", "kind": "spread", "label": "provider", "min_distinct": 2},
        ]
    )
    x_ap, y_ap = oversample(*data["ap-south"]["local"])
    _, ap_path = train_central(x_ap, y_ap, epochs=sizes.epochs, path=workdir / "ap-local.onnx")
    admin.push(ap_path, f"{MODEL}-ap", training_regions=["ap-south"])
    refused = admin.plan_deployment({"ref": f"{MODEL}-ap:1", "selector": ""})
    offenders = sorted({str(v.get("site")) for v in refused["violations"]})
    rules = sorted({str(v.get("rule")) for v in refused["violations"]})
    run.event(
        f"policy: a model trained on ap-south data, planned for every plant, is refused by "
        f"{', '.join(rules)} at {', '.join(offenders)}"
    )
    run.check(
        "residency_refused",
        not refused["ok"] and offenders == sorted([site_of("eu-west"), site_of("us-east")]),
        "the hub names the rule and each offending site; nothing changed",
    )
    strategy = {
        "kind": "canary",
        "canary": site_of("eu-west"),
        "then": [100],
        "bake_s": 2.0 if sizes.window_s < 1 else 4.0,
        "progress_deadline_s": 90.0,
    }
    # Gated relative to what runs now, as a real team gates a canary: an absolute latency
    # limit would judge the machine the demo runs on, not the release.
    gates = {"max_error_rate": 0.02, "max_p99_ratio": P99_RATIO, "min_requests": MIN_REQUESTS}
    plan = admin.plan_deployment(
        {"ref": f"{MODEL}@production", "selector": "", "strategy": strategy, "gates": gates}
    )
    run.event(
        f"plan: waves {plan['waves']}, gates error<=2 %, p99<={P99_RATIO:g}x the previous "
        f"version's at the same sites, >={MIN_REQUESTS} requests per wave"
    )
    for name in PLANTS:
        lines[name] = PlantLine(
            name,
            hub_url=fleet.hub.url if fleet.hub else "",
            token=fleet.token,
            central_url=fleet.central[name].url,
            rows=data[name]["stream"][0],
            cache_dir=workdir,
            pace_s=sizes.pace_s,
        )
    first = admin.deploy(
        {"ref": f"{MODEL}@production", "selector": "", "strategy": strategy, "gates": gates}
    )
    rollout = first["rollout"]["id"]
    _start_lines_when_ready(fleet, lines, version=v1["version"], timeout=60)
    state = _settle(run, admin, rollout, 120)
    run.event(f"rollout {rollout} of {MODEL}:{v1['version']}: {state['state']}")
    run.check("first_rollout", state["state"] == "succeeded", "canary then the rest, gates held")

    # 4. Traffic: local vs what the central deployment would have given.
    run.pause(sizes.traffic_s, "traffic to measure local vs central latency")
    latency = {}
    for name, line in lines.items():
        stats = line.snapshot()
        latency[name] = {
            "local_p50_ms": percentile(stats.local_ms, 50),
            "local_p99_ms": percentile(stats.local_ms, 99),
            "central_p50_ms": percentile(stats.central_ms, 50),
            "central_p99_ms": percentile(stats.central_ms, 99),
            "central_one_way_ms": CENTRAL_DELAY_S[name] * 1000,
        }
    run.figures["latency"] = latency
    for line in lines.values():
        line.central_every = 0  # the comparison is made; plants talk to their own site only
    run.event(
        "traffic: p50 local vs central "
        + ", ".join(
            f"{n} {v['local_p50_ms']:.1f}/{v['central_p50_ms']:.1f} ms"
            for n, v in latency.items()
            if v["local_p50_ms"] is not None and v["central_p50_ms"] is not None
        )
    )

    # 5. A bad release: much slower than v1 *as v1 runs here, now* (its p99 at the canary,
    #    from the hub's telemetry), so the canary's relative gate fails on any machine.
    v1_p99_ms = _site_p99_ms(admin, str(strategy["canary"]), v1["version"])
    target_ms = max(REGRESSION_FACTOR * (v1_p99_ms or 0.0), REGRESSION_FLOOR_MS)
    regression = calibrated_slow_variant(
        central_path, workdir / "regressed.onnx", features=len(FEATURES), target_ms=target_ms
    )
    run.event(
        f"a regressed release: {regression.row_ms:.0f} ms of compute per row "
        f"({regression.layers} extra layers) against v1's p99 of "
        f"{v1_p99_ms if v1_p99_ms is not None else float('nan'):.1f} ms at the canary"
    )
    v_bad = admin.push(regression.path, MODEL, description="regressed export", parent=v1["version"])
    bad = admin.deploy(
        {"ref": f"{MODEL}:{v_bad['version']}", "selector": "", "strategy": strategy, "gates": gates}
    )
    bad_id = bad["rollout"]["id"]
    seen_bad: set[str] = set()

    def settled_bad() -> bool:
        for site in admin.list_sites():
            for m in site["models"]:
                if m["name"] == MODEL and m["active_version"] == v_bad["version"]:
                    seen_bad.add(site["name"])
        return admin.rollout(bad_id)["state"] in ("failed", "rolled_back", "succeeded", "paused")

    run.wait(settled_bad, 120, "bad rollout to settle")
    bad_state = admin.rollout(bad_id)
    back = run.wait(
        lambda: all(
            m["active_version"] == v1["version"]
            for s in admin.list_sites()
            for m in s["models"]
            if m["name"] == MODEL
        ),
        60,
        "sites back on v1",
    )
    verdict: dict[str, Any] = next((h for h in reversed(bad_state["history"]) if h.get("gate")), {})
    new_p99 = (verdict.get("figures") or {}).get("p99_ms")
    base_p99 = (verdict.get("baseline") or {}).get("p99_ms")
    run.figures["bad_release"] = {
        "version": v_bad["version"],
        "state": bad_state["state"],
        "reason": bad_state["reason"],
        "gate": verdict.get("gate"),
        "failed_at_wave": (verdict.get("step") or 0) + 1 if verdict else None,
        "canary_p99_ms": new_p99,
        "baseline_p99_ms": base_p99,
        "ratio": round(new_p99 / base_p99, 1) if new_p99 and base_p99 else None,
        "v1_p99_ms_before": v1_p99_ms,
        "regression_row_ms": round(regression.row_ms, 1),
        "regression_layers": regression.layers,
        "sites_that_ran_it": sorted(seen_bad),
    }
    run.event(
        f"bad release {MODEL}:{v_bad['version']}: {bad_state['state']} — {bad_state['reason']}"
    )
    run.check(
        "bad_release_rolled_back",
        bad_state["state"] == "failed"
        and verdict.get("gate") == "max_p99_ratio"
        and verdict.get("step") == 0
        and back
        and seen_bad <= {site_of("eu-west")},
        f"the canary's relative p99 gate failed, rolled back; later waves never ran it "
        f"(ran it: {sorted(seen_bad)})",
    )

    # 6. Outage: the hub is killed; plants keep predicting; telemetry waits on disk.
    before = {n: line.snapshot().failed for n, line in lines.items()}
    sent_before = sum(line.snapshot().sent for line in lines.values())
    fleet.kill_hub()
    run.event(f"hub killed (SIGKILL) for {sizes.outage_s:.0f} s")
    run.pause(sizes.outage_s, "the outage to end (plants keep predicting)")
    fleet.restart_hub()
    sent_during = sum(line.snapshot().sent for line in lines.values()) - sent_before
    failed_during = sum(line.snapshot().failed - before[n] for n, line in lines.items())
    run.figures["outage"] = {
        "seconds": sizes.outage_s,
        "requests": sent_during,
        "failed": failed_during,
    }
    run.event(f"hub back: {sent_during} requests served during the outage, {failed_during} failed")
    run.check("outage_zero_failures", failed_during == 0 and sent_during > 0, "no failed request")

    # 7. Drift: eu-west's air-temperature sensor drifts in a hot summer.
    lines[DRIFT_PLANT].sensor_drift_k = DRIFT_K
    run.event(f"{DRIFT_PLANT}: air-temperature sensor drifts +{DRIFT_K:.0f} K")
    flagged: dict[str, list[str]] = {}

    def drift_seen() -> bool:
        report = admin.drift(MODEL, version=v1["version"])
        flagged.clear()
        for result in report.get("results", []):
            names = [
                f.get("label") or f["feature"]
                for f in result.get("features", [])
                if f.get("drift") and f.get("role") == "input"
            ]
            if names:
                flagged[result["site"]] = names
        return site_of(DRIFT_PLANT) in flagged

    run.wait(drift_seen, sizes.drift_s * 3 + 10, "drift flag")
    run.figures["drift_detail"] = {
        r["site"]: {
            (f.get("label") or f["feature"]): {"psi": f.get("psi"), "n": f.get("current_n")}
            for f in r.get("features", [])
            if f.get("role") == "input"
        }
        for r in admin.drift(MODEL, version=v1["version"]).get("results", [])
    }
    lines[DRIFT_PLANT].sensor_drift_k = 0.0
    run.figures["drift"] = flagged
    run.event("drift flags: " + (", ".join(f"{s}: {v}" for s, v in flagged.items()) or "none"))
    run.check(
        "drift_flagged",
        flagged == {site_of(DRIFT_PLANT): [DRIFT_FEATURE]},
        f"flagged {site_of(DRIFT_PLANT)} on {DRIFT_FEATURE} only",
    )

    # 8. Federated improvement: plants train on local data that never leaves them.
    job = admin.start_federated_job(
        {
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
            "alias": "candidate",
        }
    )
    run.event(f"federated job {job['id']}: {sizes.fl_rounds} rounds, FedAvg")
    done = run.wait(
        lambda: admin.federated_job(job["id"])["state"] in ("completed", "failed", "aborted"),
        240,
        "federated job",
    )
    view = admin.federated_job(job["id"])
    consent = admin.federation_consents()
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
        "job": job["id"],
        "state": view["state"],
        "result_version": view["result_version"],
        "rounds": rounds,
        "declined": {
            s: c.get("reason") for s, c in consent.items() if not c.get("participate", True)
        },
    }
    run.check(
        "federated_registered",
        done and view["state"] == "completed" and view["result_version"] is not None,
        f"job {view['state']}, result {MODEL}:{view['result_version']}",
    )
    if view["result_version"] is None:
        return
    fl_version = int(view["result_version"])
    fl_path = workdir / "federated.onnx"
    admin.pull(f"{MODEL}:{fl_version}", fl_path)
    accuracy: dict[str, dict[str, Scores]] = {}
    for name in PLANTS:
        x_h, y_h = data[name]["holdout"]
        accuracy[name] = {
            "central": score(central_path, x_h, y_h),
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
    admin.set_alias(MODEL, "production", fl_version)
    fl_rollout = admin.deploy(
        {"ref": f"{MODEL}:{fl_version}", "selector": "", "strategy": strategy, "gates": gates}
    )["rollout"]["id"]
    fl_state = _settle(run, admin, fl_rollout, 120)
    canary_verdict = next((h["message"] for h in fl_state["history"] if h.get("step") == 0), "")
    run.event(
        f"rollout {fl_rollout} of {MODEL}:{fl_version}: {fl_state['state']}"
        + (f"; canary: {canary_verdict}" if canary_verdict else "")
    )
    run.check("federated_rolled_out", fl_state["state"] == "succeeded", "through the canary")

    # 9. Telemetry complete: stop the lines; the hub must count exactly what was answered.
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
        status = admin.telemetry_status()
        totals.clear()
        totals.update({row["site"]: int(row["requests_total"]) for row in status["sites"]})
        return all(totals.get(s) == n for s, n in answered.items())

    run.wait(complete, 30 + sizes.window_s * 4, "telemetry")
    run.figures["telemetry"] = {"answered": answered, "hub_totals": dict(totals)}
    run.check(
        "telemetry_complete",
        all(totals.get(s) == n for s, n in answered.items()),
        f"hub totals {totals} == requests answered {answered}",
    )


def _site_p99_ms(admin: Any, site: str, version: int) -> float | None:
    """The p99 the hub's telemetry shows for ``MODEL:version`` at ``site`` over recent windows."""
    for row in admin.telemetry_status()["sites"]:
        if row["site"] != site:
            continue
        for m in row.get("models", []):
            if m["model"] == MODEL and m["version"] == version and m.get("p99_s") is not None:
                return float(m["p99_s"]) * 1000.0
    return None


def _shuffled(data: tuple[np.ndarray, np.ndarray], seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(data[1]))
    return data[0][order], data[1][order]


def _start_lines_when_ready(
    fleet: DemoFleet, lines: dict[str, PlantLine], *, version: int, timeout: float
) -> None:
    """A plant's line starts once its site serves the model (canary first, then the rest)."""
    pending = dict(lines)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for site in fleet.client.list_sites():
            plant = site["name"].removeprefix("plant-")
            ready = any(
                m["name"] == MODEL and m["active_version"] == version for m in site["models"]
            )
            if plant in pending and ready:
                pending.pop(plant).start()
        time.sleep(0.2)


def _settle(run: Run, admin: Any, rollout_id: str, timeout: float) -> dict[str, Any]:
    run.wait(
        lambda: (
            admin.rollout(rollout_id)["state"]
            in ("succeeded", "failed", "paused", "aborted", "rolled_back")
        ),
        timeout,
        "rollout",
    )
    result: dict[str, Any] = admin.rollout(rollout_id)
    return result


def _summary(
    run: Run, fleet: DemoFleet, lines: dict[str, PlantLine], workdir: Path
) -> dict[str, Any]:
    plants = {}
    for name, line in lines.items():
        stats = line.snapshot()
        plants[name] = {
            "site": site_of(name),
            "requests": stats.sent,
            "failed": stats.failed,
            "served_by": dict(stats.served_by),
            "declined_federation": FL_REFUSAL.get(name),
            "failures": sorted({message[:120] for _, message in stats.failures})[:5],
        }
    return {
        "ok": bool(run.checks) and all(run.checks.values()),
        "seconds": round(time.monotonic() - run.started, 1),
        "workdir": str(workdir),
        "hub_url": fleet.hub.url if fleet.hub else None,
        "checks": run.checks,
        "timeline": run.timeline,
        "plants": plants,
        **run.figures,
    }
