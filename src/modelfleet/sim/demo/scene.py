"""What the demo's steps share: one typed record of the run so far, and the waits they reuse.

The scenario used to be one 338-line function whose locals carried state from one act to the
next; a reader had to scroll to learn which act set ``strategy`` or ``v1``. Here every value a
later step reads is a named field of :class:`Scene`, set by exactly one earlier step, so a step
can be read (and reordered or skipped in a test) on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.api import Rollout
from modelfleet.errors import ModelfleetError
from modelfleet.hub_client import HubClient
from modelfleet.sim.demo.feedback import FeedbackLoop
from modelfleet.sim.demo.fleet import MODEL, DemoFleet
from modelfleet.sim.demo.progress import Run, Sizes
from modelfleet.sim.demo.traffic import PlantLine

#: One plant's data sets by role ("history", "local", "holdout", "stream"): features, labels.
PlantData = dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass
class Scene:
    """The demo's state between steps; the fields below ``workdir`` are filled as it goes."""

    run: Run
    fleet: DemoFleet
    lines: dict[str, PlantLine]
    sizes: Sizes
    workdir: Path
    #: Per plant, from the ``data`` step.
    data: dict[str, PlantData] = field(default_factory=dict)
    #: The centrally trained model and its registered version, from ``central training``.
    central_path: Path = Path()
    v1: int = 0
    #: The rollout strategy and gates every deployment of the demo uses, from ``first rollout``.
    strategy: dict[str, Any] = field(default_factory=dict)
    gates: dict[str, Any] = field(default_factory=dict)
    #: The federated job's registered result, from ``federated training``.
    fl_version: int = 0
    #: The plants' ground truth going back to their sites, from ``traffic`` on.
    feedback: FeedbackLoop | None = None

    @property
    def admin(self) -> HubClient:
        return self.fleet.client


@dataclass(frozen=True)
class Step:
    """One act of the scenario. ``act`` answers whether the scenario goes on after it (the
    federated acts need the job's result; without one the rest has nothing to measure)."""

    name: str
    act: Callable[[Scene], bool]


def site_p99_ms(admin: HubClient, site: str, version: int) -> float | None:
    """The p99 the hub's telemetry shows for ``MODEL:version`` at ``site`` over recent windows."""
    for row in admin.get_telemetry_status()["sites"]:
        if row["site"] != site:
            continue
        for m in row.get("models", []):
            if m["model"] == MODEL and m["version"] == version and m.get("p99_s") is not None:
                return float(m["p99_s"]) * 1000.0
    return None


def shuffled(data: tuple[np.ndarray, np.ndarray], seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(data[1]))
    return data[0][order], data[1][order]


def start_lines_when_ready(
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


def settle(run: Run, admin: HubClient, rollout_id: str, timeout: float) -> Rollout:
    """Wait for a rollout to reach a state it stays in, and answer its view."""
    run.wait(
        lambda: (
            admin.get_rollout(rollout_id)["state"]
            in ("succeeded", "failed", "paused", "aborted", "rolled_back")
        ),
        timeout,
        "rollout",
    )
    return admin.get_rollout(rollout_id)


def followed_rollout(run: Run, admin: HubClient, version: int) -> str:
    """The rollout the demo's deployment (which follows ``production``) starts by itself once
    the alias moves to ``version``: within a controller tick or two."""
    found: list[str] = []

    def started() -> bool:
        found[:] = [
            r.id for r in admin.list_rollouts() if r.deployment == MODEL and r.to_version == version
        ]
        return bool(found)

    if not run.wait(started, 60, f"the rollout of v{version} the deployment starts"):
        raise ModelfleetError(f"no rollout of {MODEL}:{version} started after the alias moved")
    return found[0]
