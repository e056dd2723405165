"""Krum and Multi-Krum (Blanchard et al., 2017).

Each update is scored by the summed squared distance to its ``n - f - 2`` nearest
neighbours, where ``f`` is the number of Byzantine sites tolerated; poisoned updates lie
far from the honest cluster and score badly. Krum keeps the single best update;
Multi-Krum averages the ``keep`` best (default ``n - f``), weighted by examples, which
keeps most of FedAvg's statistical efficiency.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from modelfleet.errors import InvalidInput
from modelfleet.federation.strategies.base import Aggregator, Collecting, Strategy, number


class _Krum(Collecting):
    def __init__(self, size: int, byzantine: int, keep: int | None) -> None:
        super().__init__(size)
        self.byzantine = byzantine
        self.keep = keep

    def result(self) -> npt.NDArray[np.float64]:
        stacked = self.stacked().astype(np.float64)
        n = len(stacked)
        # Squared distances through the Gram matrix: n x n, never n x n x d.
        norms = np.einsum("ij,ij->i", stacked, stacked)
        gram = stacked @ stacked.T
        dist = np.maximum(norms[:, None] + norms[None, :] - 2.0 * gram, 0.0)
        neighbours = max(1, n - self.byzantine - 2)
        neighbours = min(neighbours, n - 1) if n > 1 else 0
        scores = np.array(
            [np.sort(np.delete(dist[i], i))[:neighbours].sum() if n > 1 else 0.0 for i in range(n)]
        )
        keep = self.keep if self.keep is not None else max(1, n - self.byzantine)
        chosen = np.argsort(scores, kind="stable")[: min(keep, n)]
        counts = np.array([self.updates[i].num_examples for i in chosen], np.float64)
        out: npt.NDArray[np.float64] = (stacked[chosen] * counts[:, None]).sum(0) / counts.sum()
        self.selected = [self.updates[i].site for i in chosen]
        return out


class Krum(Strategy):
    """``keep=1`` is Krum; ``multikrum`` is the same with ``keep = n - f`` by default."""

    name = "krum"
    streaming = False
    default_keep: int | None = 1

    def __init__(self, **params: Any) -> None:
        self.byzantine = int(number(params, "byzantine", 2, low=0, high=10_000))
        keep = params.pop("keep", self.default_keep)
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise InvalidInput(
                f"strategy parameter 'keep' must be a positive integer, got {keep!r}"
            )
        self.keep: int | None = keep
        super().__init__(**params)

    def params(self) -> dict[str, Any]:
        return {"byzantine": self.byzantine, "keep": self.keep}

    def min_updates(self) -> int:
        return 2 * self.byzantine + 3 if self.keep == 1 else self.byzantine + 1

    def aggregator(self, size: int) -> Aggregator:
        return _Krum(size, self.byzantine, self.keep)


class MultiKrum(Krum):
    name = "multikrum"
    default_keep = None
