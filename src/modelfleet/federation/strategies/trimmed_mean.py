"""Coordinate-wise trimmed mean (Yin et al., 2018): per parameter, drop the ``beta``
fraction of largest and of smallest values, then average the rest."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from modelfleet.federation.strategies.base import Aggregator, Collecting, Strategy, number


class _Trimmed(Collecting):
    def __init__(self, size: int, beta: float) -> None:
        super().__init__(size)
        self.beta = beta

    def result(self) -> npt.NDArray[np.float64]:
        stacked = np.sort(self.stacked(), axis=0)
        cut = math.floor(self.beta * len(stacked))
        if 2 * cut >= len(stacked):
            cut = (len(stacked) - 1) // 2
        kept = stacked[cut : len(stacked) - cut]
        out: npt.NDArray[np.float64] = kept.astype(np.float64).mean(axis=0)
        return out


class TrimmedMean(Strategy):
    name = "trimmed_mean"
    streaming = False

    def __init__(self, **params: Any) -> None:
        self.beta = number(params, "beta", 0.2, low=0.0, high=0.49)
        super().__init__(**params)

    def params(self) -> dict[str, Any]:
        return {"beta": self.beta}

    def aggregator(self, size: int) -> Aggregator:
        return _Trimmed(size, self.beta)
