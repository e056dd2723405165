"""One round's aggregation: the code path shared by the hub coordinator and the simulator.

Updates flow ``site -> stages -> aggregator -> server update``. The stages are where
secure aggregation and differential privacy will slot in (clip each delta, add noise,
remove pairwise masks) without the strategies knowing: a stage sees an :class:`Update`
and returns it transformed, or ``None`` to drop it with a reason. Updates are consumed
from an iterator, so a streaming strategy aggregates a round with one model's worth of
memory however many sites took part.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from modelfleet.errors import InvalidInput
from modelfleet.federation.strategies.base import State, Strategy, Update, Vector


class UpdateStage(Protocol):
    """A transformation between the site and the aggregator."""

    name: str

    def __call__(self, update: Update) -> Update | str:
        """The update to aggregate, or a reason (text) to leave it out of the round."""


class RequireFinite:
    """Leaves out updates holding NaN or infinity, which would poison any mean."""

    name = "finite"

    def __call__(self, update: Update) -> Update | str:
        # NaN and infinity propagate through a sum: one fast reduction instead of a
        # full element-wise test; a finite sum that overflowed is absurd anyway.
        if np.isfinite(np.add.reduce(update.delta, dtype=np.float32)):
            return update
        if not np.isfinite(update.delta).all():
            return "update holds NaN or infinite values"
        return "update values are too large to aggregate"


@dataclass
class ClipNorm:
    """Scales a delta down to at most ``max_norm`` (L2): the first half of DP-FedAvg,
    and a cheap bound on what any one site can do to the global model."""

    max_norm: float
    name: str = "clip"

    def __call__(self, update: Update) -> Update | str:
        norm = float(np.linalg.norm(update.delta))
        if norm <= self.max_norm or norm == 0.0:
            return update
        scaled = (update.delta * np.float32(self.max_norm / norm)).astype(np.float32)
        return Update(update.site, scaled, update.num_examples, update.metrics)


def default_stages(clip_norm: float | None = None) -> list[UpdateStage]:
    stages: list[UpdateStage] = [RequireFinite()]
    if clip_norm is not None:
        stages.append(ClipNorm(clip_norm))
    return stages


@dataclass
class RoundOutcome:
    weights: Vector
    state: State
    metrics: dict[str, float]
    used: list[str]
    dropped: dict[str, str] = field(default_factory=dict)


class MetricMean:
    """Example-weighted means of whatever metrics sites report (streaming)."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._weights: dict[str, float] = {}

    def add(self, metrics: dict[str, float], weight: int) -> None:
        for key, value in metrics.items():
            if isinstance(value, int | float) and math.isfinite(value):
                self._sums[key] = self._sums.get(key, 0.0) + weight * float(value)
                self._weights[key] = self._weights.get(key, 0.0) + weight

    def result(self) -> dict[str, float]:
        return {k: self._sums[k] / self._weights[k] for k in sorted(self._sums)}


def aggregate_round(
    strategy: Strategy,
    weights: Vector,
    state: State,
    updates: Iterable[Update],
    *,
    round_number: int,
    stages: Sequence[UpdateStage] = (),
) -> RoundOutcome:
    """Fold ``updates`` through ``stages`` into ``strategy`` and apply the server step."""
    aggregator = strategy.aggregator(int(weights.size))
    means = MetricMean()
    used: list[str] = []
    dropped: dict[str, str] = {}
    for update in updates:
        current: Update | str = update
        for stage in stages:
            if isinstance(current, str):
                break
            current = stage(current)
        if isinstance(current, str):
            dropped[update.site] = current
            continue
        try:
            aggregator.add(current)
        except InvalidInput as exc:
            dropped[update.site] = exc.message
            continue
        means.add(current.metrics, current.num_examples)
        used.append(current.site)
    if not used:
        raise InvalidInput("no usable update in this round: " + "; ".join(dropped.values()))
    new_weights, new_state = strategy.server_update(
        weights, aggregator.result(), state, round_number
    )
    metrics = means.result()
    metrics["num_examples"] = float(aggregator.examples)
    metrics["num_sites"] = float(len(used))
    return RoundOutcome(new_weights, new_state, metrics, used, dropped)
