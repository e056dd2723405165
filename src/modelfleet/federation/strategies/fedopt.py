"""FedAdam and FedYogi (Reddi et al., 2021, "Adaptive Federated Optimization").

The weighted-mean delta is treated as a pseudo-gradient and fed to a server-side
optimizer whose first and second moments persist across rounds (in the coordinator's
job state, so a hub restart does not reset them). The two differ only in how the second
moment moves: Adam's exponential average versus Yogi's sign-controlled additive update,
which grows it more cautiously when updates are noisy.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import numpy.typing as npt

from modelfleet.federation.strategies.base import (
    Aggregator,
    State,
    Strategy,
    Vector,
    WeightedMean,
    number,
)


class _ServerOptimizer(Strategy):
    def __init__(self, **params: Any) -> None:
        self.eta = number(params, "server_lr", 0.01, low=0.0, high=1e3)
        self.beta1 = number(params, "beta1", 0.9, low=0.0, high=0.999999)
        self.beta2 = number(params, "beta2", 0.99, low=0.0, high=0.999999)
        self.tau = number(params, "tau", 1e-3, low=1e-12, high=1e3)
        super().__init__(**params)

    def params(self) -> dict[str, Any]:
        return {"server_lr": self.eta, "beta1": self.beta1, "beta2": self.beta2, "tau": self.tau}

    def aggregator(self, size: int) -> Aggregator:
        return WeightedMean(size)

    @abstractmethod
    def _second_moment(
        self, v: npt.NDArray[np.float64], g2: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """How the second moment moves: the only difference between Adam and Yogi."""

    def server_update(
        self,
        weights: Vector,
        delta: npt.NDArray[np.float64],
        state: State,
        round_number: int,
    ) -> tuple[Vector, State]:
        m = state.get("m", np.zeros_like(delta))
        v = state.get("v", np.full_like(delta, self.tau**2))
        m = self.beta1 * m + (1.0 - self.beta1) * delta
        v = self._second_moment(v, delta * delta)
        step = self.eta * m / (np.sqrt(v) + self.tau)
        new = (weights.astype(np.float64) + step).astype(np.float32)
        return new, {"m": m, "v": v}


class FedAdam(_ServerOptimizer):
    name = "fedadam"

    def _second_moment(
        self, v: npt.NDArray[np.float64], g2: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = self.beta2 * v + (1.0 - self.beta2) * g2
        return out


class FedYogi(_ServerOptimizer):
    name = "fedyogi"

    def _second_moment(
        self, v: npt.NDArray[np.float64], g2: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = v - (1.0 - self.beta2) * g2 * np.sign(v - g2)
        return out
