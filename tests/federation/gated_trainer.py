"""A trainer the test holds: the built-in trainer behind a gate the test opens call by call.

A site registers it in its config (``trainers: {gated: "tests.federation.gated_trainer:
GatedTrainer"}``) and is given a gate file in ``$MODELFLEET_TEST_GATE`` (each site process has
its own environment). The file says how many ``fit`` calls this process may make: a number,
or ``open`` for no limit. A call past the allowance writes its number to ``<gate>.waiting``
and waits until the allowance grows, or the process is killed. So the test knows, without
guessing from timing, that the site is inside a round and has not answered it yet.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from modelfleet.federation.specs import ModelSpec, Weights
from modelfleet.federation.training import FitResult, TrainConfig
from modelfleet.site.trainer import BuiltinTrainer, Dataset

GATE_ENV = "MODELFLEET_TEST_GATE"


def allow(gate: Path, calls: int | str) -> None:
    """Let the site behind ``gate`` make ``calls`` fit calls in all (or ``"open"``)."""
    partial = gate.with_name(gate.name + ".tmp")
    partial.write_text(str(calls))
    os.replace(partial, gate)


def waiting_at(gate: Path) -> int | None:
    """The number of the fit call held at the gate, if one is."""
    try:
        return int((gate.with_name(gate.name + ".waiting")).read_text())
    except (OSError, ValueError):
        return None


class GatedTrainer(BuiltinTrainer):
    def __init__(self) -> None:
        self.calls = 0

    def fit(
        self, spec: ModelSpec, weights: Weights, data: Dataset, config: TrainConfig, seed: int
    ) -> FitResult:
        self.calls += 1
        gate = os.environ.get(GATE_ENV)
        if gate:
            self._wait(Path(gate))
        return super().fit(spec, weights, data, config, seed)

    def _wait(self, gate: Path) -> None:
        waiting = gate.with_name(gate.name + ".waiting")
        while True:
            try:
                allowed = gate.read_text().strip()
            except OSError:
                allowed = "0"
            if allowed == "open" or (allowed.isdigit() and self.calls <= int(allowed)):
                waiting.unlink(missing_ok=True)
                return
            if waiting_at(gate) != self.calls:
                waiting.write_text(str(self.calls))
            time.sleep(0.02)
