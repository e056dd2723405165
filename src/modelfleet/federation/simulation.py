"""Many virtual sites in one process, through the same aggregation path as the hub.

Each virtual site trains with the built-in trainer (:func:`~.training.sgd_fit`) on its
own partition and hands an :class:`~.strategies.Update` to
:func:`~.rounds.aggregate_round`, exactly as the coordinator does with updates that
arrived over HTTP; only transport and persistence are left out. Used by
``modelfleet fl simulate``, by the robustness tests and as a baseline in the benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modelfleet.errors import InvalidInput
from modelfleet.federation.rounds import (
    ClipSetting,
    aggregate_round,
    clip_norm_for,
    default_stages,
    delta_norm,
)
from modelfleet.federation.specs import ModelSpec, Weights, evaluate, flatten, unflatten
from modelfleet.federation.strategies import Strategy, Update
from modelfleet.federation.strategies.base import State
from modelfleet.federation.training import TrainConfig, eval_metrics, sgd_fit, task_seed

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def partition_non_iid(
    y: npt.NDArray[np.integer], sites: int, shards_per_site: int = 2, seed: int = 0
) -> list[IntArray]:
    """McMahan et al.'s pathological split: sort by label, cut ``sites * shards_per_site``
    equal shards, give each site ``shards_per_site`` random shards. ``InvalidInput`` when
    the split would leave a site without data."""
    _check_split(len(y), sites, shards_per_site)
    order = np.argsort(np.asarray(y), kind="stable")
    shards = np.array_split(order, sites * shards_per_site)
    picks = np.random.default_rng(seed).permutation(len(shards))
    return [
        np.sort(np.concatenate([shards[j] for j in picks[i::sites]])).astype(np.int64)
        for i in range(sites)
    ]


def partition_iid(n: int, sites: int, seed: int = 0) -> list[IntArray]:
    _check_split(n, sites, 1)
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, sites)]


def _check_split(examples: int, sites: int, shards_per_site: int) -> None:
    """Every site gets at least one example of every shard it is dealt."""
    if sites < 1:
        raise InvalidInput(f"sites must be at least 1, got {sites}")
    if shards_per_site < 1:
        raise InvalidInput(f"shards per site must be at least 1, got {shards_per_site}")
    if sites * shards_per_site > examples:
        raise InvalidInput(
            f"{sites} sites x {shards_per_site} shards need at least that many examples; "
            f"the data set has {examples} (at most {examples // shards_per_site} sites)"
        )


@dataclass(frozen=True)
class Poison:
    """A misbehaving site: ``sign_flip`` sends ``-factor * delta``, ``scale`` sends
    ``factor * delta``."""

    mode: Literal["sign_flip", "scale"] = "sign_flip"
    factor: float = 4.0

    def apply(self, delta: FloatArray) -> FloatArray:
        k = -self.factor if self.mode == "sign_flip" else self.factor
        return (delta * np.float32(k)).astype(np.float32)


@dataclass
class VirtualSite:
    name: str
    x: FloatArray
    y: IntArray
    x_eval: FloatArray | None = None
    y_eval: IntArray | None = None
    poison: Poison | None = None


@dataclass
class RoundRecord:
    round: int
    duration_s: float
    metrics: dict[str, float]
    test: dict[str, float] = field(default_factory=dict)


@dataclass
class SimulationResult:
    weights: Weights
    rounds: list[RoundRecord]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rounds": [
                {"round": r.round, "duration_s": r.duration_s, "metrics": r.metrics, "test": r.test}
                for r in self.rounds
            ]
        }


def simulate(
    spec: ModelSpec,
    weights: Weights,
    sites: Sequence[VirtualSite],
    strategy: Strategy,
    *,
    rounds: int,
    train: TrainConfig,
    test: tuple[FloatArray, IntArray] | None = None,
    job: str = "sim",
    clip_norm: ClipSetting = "auto",
    on_round: Callable[[RoundRecord], None] | None = None,
) -> SimulationResult:
    """Run ``rounds`` rounds with every site taking part; evaluate on ``test`` each round.

    ``clip_norm`` bounds each delta as a job's does (``"auto"``: 2x the round's median norm).
    """
    if not sites:
        raise InvalidInput("a simulation needs at least one virtual site")
    if rounds < 1:
        raise InvalidInput("a simulation needs at least one round")
    if len(sites) < strategy.min_updates():
        # Every virtual site answers every round, so a round has len(sites) updates.
        settings = ", ".join(f"{k}={v}" for k, v in strategy.params().items() if v is not None)
        raise InvalidInput(
            f"strategy {strategy.name}"
            + (f" ({settings})" if settings else "")
            + f" needs at least {strategy.min_updates()} sites per round; "
            f"the simulation has {len(sites)}"
        )
    site_train = train.model_copy(update=strategy.site_params())
    vector = flatten(spec, weights)
    state: State = {}
    history: list[RoundRecord] = []
    for number in range(1, rounds + 1):
        started = time.perf_counter()
        current = unflatten(spec, vector)

        def updates(
            current: Weights = current, number: int = number, vector: FloatArray = vector
        ) -> Any:
            for site in sites:
                metrics: dict[str, float] = {}
                if site.x_eval is not None and site.y_eval is not None and len(site.y_eval):
                    metrics.update(eval_metrics(spec, current, site.x_eval, site.y_eval))
                fit = sgd_fit(
                    spec,
                    current,
                    site.x,
                    site.y,
                    site_train,
                    seed=task_seed(job, number, site.name),
                )
                metrics.update(fit.metrics)
                delta = flatten(spec, fit.weights) - vector
                if site.poison is not None:
                    delta = site.poison.apply(delta)
                yield Update(site.name, delta, fit.num_examples, metrics)

        # Clipping to the round's median needs every norm first: in a simulation the
        # updates are in memory anyway (the hub reads its stored updates twice instead).
        round_updates = list(updates())
        bound = clip_norm_for(clip_norm, (delta_norm(u) for u in round_updates))
        outcome = aggregate_round(
            strategy,
            vector,
            state,
            round_updates,
            round_number=number,
            stages=default_stages(bound),
        )
        vector, state = outcome.weights, outcome.state
        record = RoundRecord(number, time.perf_counter() - started, outcome.metrics)
        if test is not None:
            record.test = evaluate(spec, unflatten(spec, vector), *test)
        history.append(record)
        if on_round is not None:
            on_round(record)
    return SimulationResult(unflatten(spec, vector), history)


def digits_sites(
    sites: int = 10,
    *,
    non_iid: bool = True,
    shards_per_site: int = 2,
    test_fraction: float = 0.2,
    seed: int = 0,
    poisoned: int = 0,
    poison: Poison | None = None,
) -> tuple[ModelSpec, list[VirtualSite], tuple[FloatArray, IntArray]]:
    """scikit-learn's bundled ``load_digits`` split into sites plus a held-out test set.

    The same split the benchmark gives real site processes and Flower; features are
    scaled to [0, 1]. The first ``poisoned`` sites misbehave with ``poison``.
    """
    if not 0 <= poisoned <= sites:
        raise InvalidInput(f"poisoned sites must be within 0..{sites} (the sites), got {poisoned}")
    x, y = load_digits_arrays()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_test = round(test_fraction * len(y))
    test_idx, train_idx = order[:n_test], order[n_test:]
    x_train, y_train = x[train_idx], y[train_idx]
    parts = (
        partition_non_iid(y_train, sites, shards_per_site, seed)
        if non_iid
        else partition_iid(len(y_train), sites, seed)
    )
    virtual = [
        VirtualSite(
            f"site-{i:02d}",
            x_train[idx],
            y_train[idx],
            poison=(poison or Poison()) if i < poisoned else None,
        )
        for i, idx in enumerate(parts)
    ]
    spec = ModelSpec(family="softmax", features=x.shape[1], classes=10)
    return spec, virtual, (x[test_idx], y[test_idx])


def load_digits_arrays() -> tuple[FloatArray, IntArray]:
    """``load_digits`` as float32 in [0, 1] and int64 labels (needs scikit-learn)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise InvalidInput(
            "the digits data set ships with scikit-learn: pip install 'modelfleet[sklearn]'"
        ) from exc
    data = load_digits()
    x = (np.asarray(data.data, np.float32) / 16.0).astype(np.float32)
    return x, np.asarray(data.target, np.int64)
