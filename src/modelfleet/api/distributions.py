"""One feature's reference vs current distribution at one site, as the sketches hold it.

The hub keeps no rows: every figure here is read from the version's reference profile and
the merged sketches of the site's recent windows (see
:mod:`modelfleet.monitoring.distributions`), so they are approximate within the bounds
given (``rank_error`` for numbers, ``error`` for categories).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from modelfleet.api._base import Free, Record

__all__ = [
    "CategoryCounts",
    "CategorySide",
    "FeatureDistribution",
    "NumericSide",
]


class NumericSide(Record):
    """One side of a numeric feature: exact counts, the sketch's min/max and error bound."""

    present: bool
    count: int
    missing: int
    n: int
    min: float | None
    max: float | None
    rank_error: float | None
    estimation_mode: bool


class CategorySide(Record):
    """One side of a categorical feature; ``error`` is the a-priori bound on each
    estimate as a share of the total."""

    present: bool
    count: int
    missing: int
    n: int
    error: float | None


class CategoryCounts(Record):
    item: str
    reference: int
    current: int
    reference_share: float
    current_share: float


class FeatureDistribution(Record):
    """``kind`` says which half is filled: numeric (edges, PMFs, CDFs, quantiles) or
    categorical (items). ``drift`` is the feature's row of the drift report (statistics,
    thresholds' verdict, reasons) or None without traffic."""

    model: str
    version: int
    site: str
    feature: str
    label: str | None
    kind: Literal["numeric", "categorical"]
    stat: Literal["psi", "ks", "js"] | None
    since: datetime
    windows: int
    thresholds: dict[str, float]
    drift: Free | None
    approximate: str
    kind_changed: str | None = None
    reference: NumericSide | CategorySide
    current: NumericSide | CategorySide
    # numeric
    edges: list[float] | None = None
    reference_pmf: list[float] | None = None
    current_pmf: list[float] | None = None
    cdf_x: list[float] | None = None
    reference_cdf: list[float] | None = None
    current_cdf: list[float] | None = None
    quantile_ranks: list[float] | None = None
    reference_quantiles: list[float] | None = None
    current_quantiles: list[float] | None = None
    # categorical
    items: list[CategoryCounts] | None = None
