"""The synthetic updates both sides of the aggregation benchmark fold (same seed, same data)."""

from __future__ import annotations

import numpy as np


def synthetic_updates(n: int = 100, size: int = 1_000_000) -> tuple[list[np.ndarray], list[int]]:
    rng = np.random.default_rng(0)
    deltas = [rng.standard_normal(size, dtype=np.float32) for _ in range(n)]
    counts = [int(c) for c in rng.integers(50, 500, n)]
    return deltas, counts
