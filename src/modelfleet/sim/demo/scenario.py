"""The smart-factory demo: starts the fleet, runs the scenario's steps, reports what they
measured, and makes sure no process of the fleet outlives it."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from modelfleet.errors import ModelfleetError
from modelfleet.sim.demo.fleet import FL_REFUSAL, MODEL, DemoFleet
from modelfleet.sim.demo.fleet import site_name as site_of
from modelfleet.sim.demo.outcomes import assumptions, outcome
from modelfleet.sim.demo.progress import Run, Sizes
from modelfleet.sim.demo.report import render
from modelfleet.sim.demo.scene import Scene, Step
from modelfleet.sim.demo.steps import (
    bad_release,
    central_training,
    data,
    drift,
    first_rollout,
    fleet_up,
    outage,
    residency,
    traffic,
)
from modelfleet.sim.demo.steps_anomaly import stuck_sensor
from modelfleet.sim.demo.steps_federated import federated_rollout, federated_training, telemetry
from modelfleet.sim.demo.steps_feedback import ground_truth
from modelfleet.sim.demo.traffic import Answer, PlantLine

log = logging.getLogger(__name__)

#: The scenario, in the order it runs.
STEPS: tuple[Step, ...] = (
    Step("data", data),
    Step("central training", central_training),
    Step("fleet up", fleet_up),
    Step("residency", residency),
    Step("first rollout", first_rollout),
    Step("traffic", traffic),
    Step("bad release", bad_release),
    Step("outage", outage),
    Step("drift", drift),
    Step("stuck sensor", stuck_sensor),
    Step("federated training", federated_training),
    Step("federated rollout", federated_rollout),
    Step("telemetry", telemetry),
    Step("ground truth", ground_truth),
)


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
                f"MODELFLEET_TOKEN={fleet.token} MODELFLEET_CA_FILE={fleet.ca_file}\n"
                f"The dashboard: {fleet.hub.url}/ui (sign in with that token).\n"
                "The plants keep sending requests. Then try: modelfleet status, modelfleet site "
                f"ls, modelfleet rollout ls, modelfleet drift {MODEL}, modelfleet fl ls. "
                "Ctrl-C stops it."
            )
            # The plants keep sending (healthy sensors), so the dashboard stays live.
            kept = [line.again() for line in lines.values()]
            for line in kept:
                line.start()
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass  # Ctrl-C ends --keep; the fleet is closed below
            finally:
                for line in kept:
                    line.stop()
    finally:
        # Whatever happened (a bug, Ctrl-C), no process of the fleet outlives the demo.
        fleet.close()
    if ok and not keep:
        shutil.rmtree(workdir, ignore_errors=True)  # kept on failure: logs are in there
    return ok


def _scenario(
    run: Run, fleet: DemoFleet, lines: dict[str, PlantLine], sizes: Sizes, workdir: Path
) -> None:
    """Run :data:`STEPS` in order on one shared :class:`Scene` until one says to stop."""
    scene = Scene(run=run, fleet=fleet, lines=lines, sizes=sizes, workdir=workdir)
    try:
        for step in STEPS:
            log.debug("demo step: %s", step.name)
            if not step.act(scene):
                return
    finally:
        if scene.feedback is not None:
            scene.feedback.stop()  # idempotent: ``ground truth`` stops it on a full run


def _summary(
    run: Run, fleet: DemoFleet, lines: dict[str, PlantLine], workdir: Path
) -> dict[str, Any]:
    plants = {}
    acted_on: list[Answer] = []
    outcomes: dict[str, dict[str, float | int | None]] = {}
    for name, line in lines.items():
        stats = line.snapshot()
        acted_on.extend(stats.answers)
        outcomes[name] = outcome(stats.answers).as_dict()
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
        "outcomes": {
            "plants": outcomes,
            "fleet": outcome(acted_on).as_dict(),
            "assumptions": assumptions(),
        },
        **run.figures,
    }
