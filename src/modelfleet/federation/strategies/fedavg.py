"""FedAvg (McMahan et al., 2017): the example-weighted mean of the site updates."""

from __future__ import annotations

from modelfleet.federation.strategies.base import Aggregator, Strategy, WeightedMean


class FedAvg(Strategy):
    name = "fedavg"

    def aggregator(self, size: int) -> Aggregator:
        return WeightedMean(size)
