"""Local training of a spec'd model with numpy: what a site's built-in trainer runs.

Plain mini-batch SGD on the cross-entropy, with the FedProx proximal term when the task
asks for one. Deterministic for a given seed, so a simulation and real sites given the
same data and seed produce the same updates.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from modelfleet.federation.specs import Array, ModelSpec, Weights, evaluate, loss_and_grad


def task_seed(job: str, round_number: int, site: str) -> int:
    """The local-training seed of one site in one round, the same in simulation and real.

    Here, beside the trainer it seeds, so the hub's task board and the simulation share it
    without the runtime importing the simulation.
    """
    return zlib.crc32(f"{job}/{round_number}/{site}".encode())


class TrainConfig(BaseModel):
    """Hyper-parameters a job sends with each task."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    local_epochs: int = Field(default=1, ge=1, le=1000)
    lr: float = Field(default=0.1, gt=0, le=100)
    batch_size: int = Field(default=32, ge=1, le=1_000_000)
    l2: float = Field(default=0.0, ge=0, le=100)
    proximal_mu: float = Field(default=0.0, ge=0, le=1e6)


@dataclass
class FitResult:
    weights: Weights
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


def sgd_fit(
    spec: ModelSpec,
    weights: Weights,
    x: npt.NDArray[np.generic],
    y: npt.NDArray[np.integer],
    config: TrainConfig,
    *,
    seed: int = 0,
) -> FitResult:
    """Train a copy of ``weights``; metrics hold the mean training loss of the last epoch."""
    start = {k: v.astype(np.float64) for k, v in weights.items()}
    current = {k: v.copy() for k, v in start.items()}
    xf = np.asarray(x, dtype=np.float64)
    labels = np.asarray(y, dtype=np.int64)
    n = len(labels)
    rng = np.random.default_rng(seed)
    last_loss = float("nan")
    for _ in range(config.local_epochs):
        order = rng.permutation(n)
        losses = []
        for begin in range(0, n, config.batch_size):
            batch = order[begin : begin + config.batch_size]
            as32 = {k: v.astype(np.float32) for k, v in current.items()}
            loss, grads = loss_and_grad(spec, as32, xf[batch], labels[batch], config.l2)
            losses.append(loss * len(batch))
            for name, grad in grads.items():
                if config.proximal_mu:
                    grad = grad + config.proximal_mu * (current[name] - start[name])
                current[name] -= config.lr * grad
        last_loss = float(sum(losses) / max(n, 1))
    trained: dict[str, Array] = {k: v.astype(np.float32) for k, v in current.items()}
    return FitResult(trained, n, {"train_loss": last_loss})


def eval_metrics(
    spec: ModelSpec,
    weights: Weights,
    x: npt.NDArray[np.generic],
    y: npt.NDArray[np.integer],
) -> dict[str, float]:
    """``eval_loss`` and ``eval_accuracy`` of ``weights`` on local held-out data."""
    return {f"eval_{k}": v for k, v in evaluate(spec, weights, x, y).items()}
