"""FedProx (Li et al., 2020): FedAvg on the hub, a proximal term at the sites.

Each site minimises ``loss + mu/2 ||w - w_global||^2``, which keeps heterogeneous sites
from drifting far from the global model during their local epochs. The hub only passes
``mu`` to the sites' trainers; aggregation is the weighted mean.
"""

from __future__ import annotations

from typing import Any

from modelfleet.federation.strategies.base import Aggregator, Strategy, WeightedMean, number


class FedProx(Strategy):
    name = "fedprox"

    def __init__(self, **params: Any) -> None:
        self.mu = number(params, "proximal_mu", 0.01, low=0.0, high=1e6)
        super().__init__(**params)

    def params(self) -> dict[str, Any]:
        return {"proximal_mu": self.mu}

    def site_params(self) -> dict[str, float]:
        return {"proximal_mu": self.mu}

    def aggregator(self, size: int) -> Aggregator:
        return WeightedMean(size)
