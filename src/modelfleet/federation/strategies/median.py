"""Coordinate-wise median (Yin et al., 2018): each parameter takes the median of the
sites' values, so fewer than half of the sites cannot drag it arbitrarily far."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from modelfleet.federation.strategies.base import Aggregator, Collecting, Strategy


class _Median(Collecting):
    def result(self) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = np.median(self.stacked(), axis=0).astype(np.float64)
        return out


class Median(Strategy):
    name = "median"
    streaming = False

    def aggregator(self, size: int) -> Aggregator:
        return _Median(size)
