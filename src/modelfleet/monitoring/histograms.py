"""Fixed-bucket latency and batch-size histograms that sites and the hub share.

The bucket bounds never change, so histograms from any site and any time window add up
bucket by bucket; quantiles are read back with bounded relative error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from modelfleet.errors import InvalidInput

_LAT_BASE = 50e-6
_LAT_STEPS_PER_OCTAVE = 4
#: Upper bounds (seconds) of the latency buckets: 50 us * 2**(i/4), i.e. ~19 % wide,
#: up to ~170 s; one more bucket counts anything slower. Quantiles read from these
#: buckets are within one bucket width (<= 19 % relative) of the exact value.
LATENCY_BOUNDS: tuple[float, ...] = tuple(
    _LAT_BASE * 2 ** (i / _LAT_STEPS_PER_OCTAVE) for i in range(22 * _LAT_STEPS_PER_OCTAVE)
)
#: Upper bounds of the batch-size buckets (rows per request): 1, 2, 4, ... 32768, then more.
BATCH_BOUNDS: tuple[int, ...] = tuple(2**i for i in range(16))


def latency_bucket(seconds: float) -> int:
    """Index of the latency bucket holding ``seconds`` (len(LATENCY_BOUNDS) = overflow)."""
    if seconds <= _LAT_BASE:
        return 0
    index = math.ceil(math.log2(seconds / _LAT_BASE) * _LAT_STEPS_PER_OCTAVE - 1e-9)
    return min(index, len(LATENCY_BOUNDS))


def batch_bucket(rows: int) -> int:
    """Index of the batch-size bucket for a request of ``rows`` rows."""
    return min(max(rows - 1, 0).bit_length(), len(BATCH_BOUNDS))


def histogram_quantile(counts: Sequence[int], q: float, bounds: Sequence[float]) -> float | None:
    """The ``q`` quantile of a fixed-bucket histogram, interpolated inside its bucket.

    Geometric interpolation suits the log-spaced latency buckets. None when empty.
    """
    total = sum(counts)
    if total <= 0:
        return None
    target = q * total
    running = 0.0
    for index, count in enumerate(counts):
        if count <= 0:
            continue
        if running + count >= target:
            upper = bounds[min(index, len(bounds) - 1)]
            lower = bounds[index - 1] if 0 < index <= len(bounds) else upper / 2
            if index >= len(bounds):
                return float(upper)
            fraction = (target - running) / count
            return float(lower * (upper / lower) ** fraction)
        running += count
    return float(bounds[-1])


def merge_counts(into: list[int], other: Sequence[int]) -> list[int]:
    """Add histogram ``other`` to ``into`` (growing it if needed); returns ``into``."""
    if len(other) > len(into):
        into.extend([0] * (len(other) - len(into)))
    for index, count in enumerate(other):
        into[index] += int(count)
    return into


def sparse(counts: Sequence[int]) -> dict[str, int]:
    """A histogram as ``{"index": count}`` without the empty buckets (compact JSON)."""
    return {str(i): int(c) for i, c in enumerate(counts) if c}


def dense(buckets: Mapping[str, int], size: int) -> list[int]:
    """The inverse of :func:`sparse`; keys that are not indices below ``size`` are refused
    (``InvalidInput``: the buckets come from a site)."""
    counts = [0] * size
    for key, value in buckets.items():
        try:
            index = int(key)
        except ValueError:
            raise InvalidInput(f"histogram bucket {str(key)[:40]!r} is not an index") from None
        if not 0 <= index < size or int(value) < 0:
            raise InvalidInput(f"histogram bucket {key}={value} is out of range")
        counts[index] += int(value)
    return counts
