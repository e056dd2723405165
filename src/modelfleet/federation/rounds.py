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
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

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
        norm = delta_norm(update)
        if norm <= self.max_norm or norm == 0.0:
            return update
        scaled = (update.delta * np.float32(self.max_norm / norm)).astype(np.float32)
        return Update(update.site, scaled, update.num_examples, update.metrics)


#: How a job bounds each site's delta: a fixed L2 norm, ``"auto"`` (the default) or
#: ``"off"``. ``"auto"`` clips every delta to :data:`AUTO_CLIP_MULTIPLE` times the median
#: delta norm of the round: honest sites training on similar data send deltas of similar
#: size and are left alone, while one site sending a huge delta (by mistake or to take
#: over the global model) is scaled down to the size of everyone else's. The median is
#: robust to fewer than half the sites misbehaving.
ClipSetting = float | Literal["auto", "off"]
AUTO_CLIP_MULTIPLE = 2.0


def clip_norm_for(setting: ClipSetting, norms: Iterable[float]) -> float | None:
    """The L2 bound one round applies under ``setting``, given its deltas' norms (only
    read for ``"auto"``; non-finite norms are left out, those updates are dropped anyway).
    None: no clipping."""
    if setting == "off":
        return None
    if setting == "auto":
        finite = [n for n in norms if math.isfinite(n)]
        if not finite:
            return None
        median = statistics.median(finite)
        return AUTO_CLIP_MULTIPLE * median if median > 0 else None
    return float(setting)


def delta_norm(update: Update) -> float:
    """The L2 norm of an update's delta, in float64 (a float32 sum of squares overflows
    for deltas above ~1e19, which is exactly what clipping must catch)."""
    return float(np.linalg.norm(update.delta.astype(np.float64)))


def default_stages(clip_norm: float | None = None) -> list[UpdateStage]:
    """Finiteness first, then clipping to ``clip_norm`` (None: none)."""
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
    # Every update was finite, yet their weighted sum can still overflow float32 (a
    # delta of 1e27 times a claimed example count): such a model must never be stored,
    # let alone registered and signed.
    if not np.isfinite(new_weights).all():
        raise InvalidInput(
            "the round's aggregate holds NaN or infinite values (an update too large to "
            "aggregate); the round's result was discarded"
        )
    metrics = means.result()
    metrics["num_examples"] = float(aggregator.examples)
    metrics["num_sites"] = float(len(used))
    return RoundOutcome(new_weights, new_state, metrics, used, dropped)
