"""One feature's reference and current distributions, read back from the sketches only.

The hub holds no rows: what it can show of a feature is what its sketches hold. For a
number that is a KLL sketch, whose ranks are exact to within its normalised rank error
(about 1.3 % at k=200, 99 % confidence): this module reads both sketches at the same split
points, giving a binned PMF (``get_pmf``), a CDF (``get_cdf``) and a few quantiles, plus
the exact count, missing and the sketch's min and max. For a category it is a frequent
items sketch: estimated counts per item (what the sketch lost, and categories rarer than
the privacy threshold, are in ``__other__``), with the sketch's a-priori error.

It also maps a drift statistic to a heat level for the dashboard's site x feature map:
the level says how far the figure is from its threshold, so a reader compares PSI, KS and
JS cells on one scale (levels 6-9 are at or past the threshold).

Pure functions over :mod:`.profiles`; nothing here does I/O.
"""

from __future__ import annotations

import math
from typing import Any

from modelfleet.errors import InvalidInput
from modelfleet.monitoring.profiles import (
    OTHER,
    CategoricalProfile,
    ColumnProfile,
    NumericProfile,
)

#: The statistics a heat map can show: PSI and KS exist for numeric features, JS for
#: categorical ones (see :mod:`.drift`).
STATS = ("psi", "ks", "js")
NUMERIC_STATS = ("psi", "ks")
CATEGORICAL_STATS = ("js",)
#: Bins of the PMF shown by default, and the most a caller may ask for.
DEFAULT_BINS = 20
MAX_BINS = 100
#: Points at which both CDFs are read.
CDF_POINTS = 101
#: Ranks of the quantiles listed side by side.
QUANTILE_RANKS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
#: The most categories listed (the rest are summed into :data:`OTHER`).
MAX_ITEMS = 50
#: Heat levels: 0-5 below the threshold, 6-9 at or past it (9: 8x or more).
HEAT_LEVELS = 10


def check_stat(stat: str) -> str:
    if stat not in STATS:
        raise InvalidInput(f"unknown drift statistic {stat!r}; known: {', '.join(STATS)}")
    return stat


def stat_value(stat: str, feature: dict[str, Any]) -> float | None:
    """The figure a heat map cell shows for ``stat`` (KS: the p-value's D is beside it)."""
    value = feature.get(check_stat(stat))
    return None if value is None else float(value)


def stat_ratio(stat: str, feature: dict[str, Any], thresholds: dict[str, float]) -> float | None:
    """How far a feature's statistic is along to its threshold: 1.0 at the threshold.

    PSI and JS flag at ``value >= threshold``: the ratio is ``value / threshold``. KS flags
    when its p-value falls under ``ks_pvalue``: the ratio is ``ln(p) / ln(threshold)``
    (0 for p = 1, 1 at the threshold, growing as p shrinks by orders of magnitude).
    None when the feature has no such statistic (another kind, no data).
    """
    check_stat(stat)
    if stat == "ks":
        p = feature.get("ks_pvalue")
        limit = thresholds.get("ks_pvalue", 0.0)
        if p is None or not 0 < limit < 1:
            return None
        if p <= 0:
            return math.inf
        return max(0.0, math.log(min(1.0, float(p))) / math.log(limit))
    value = feature.get(stat)
    limit = thresholds.get(stat, 0.0)
    if value is None or limit <= 0:
        return None
    return max(0.0, float(value) / limit)


def heat_level(ratio: float | None) -> int | None:
    """0..9 for a ratio to the threshold: 0-5 below it in sixths, then 6 for 1-2x, 7 for
    2-4x, 8 for 4-8x and 9 beyond; None for no figure."""
    if ratio is None or math.isnan(ratio):
        return None
    if ratio < 1:
        return min(5, int(ratio * 6))
    if math.isinf(ratio):
        return HEAT_LEVELS - 1
    return min(HEAT_LEVELS - 1, 6 + int(math.log2(ratio)))


# --- numeric ------------------------------------------------------------------------------


def _side(column: NumericProfile | None) -> dict[str, Any]:
    if column is None:
        return {"present": False, "count": 0, "missing": 0, "n": 0, "min": None, "max": None,
                "rank_error": None, "estimation_mode": False}  # fmt: skip
    empty = column.sketch.is_empty()
    return {
        "present": True,
        "count": column.count,
        "missing": column.missing,
        "n": column.n,
        "min": column.min,
        "max": column.max,
        "rank_error": None if empty else column.rank_error(),
        "estimation_mode": bool(column.sketch.is_estimation_mode()),
    }


def _span(*columns: NumericProfile | None) -> tuple[float, float] | None:
    lows = [c.min for c in columns if c is not None and c.min is not None]
    highs = [c.max for c in columns if c is not None and c.max is not None]
    if not lows or not highs:
        return None
    return min(lows), max(highs)


def _read(column: NumericProfile | None, fn: str, points: list[float]) -> list[float] | None:
    if column is None or column.sketch.is_empty():
        return None
    if fn == "pmf":
        return [round(float(v), 6) for v in column.sketch.get_pmf(points)]
    # inclusive: P(X <= x) at each point; the sketch appends a final 1.0 (dropped)
    return [round(float(v), 6) for v in column.sketch.get_cdf(points, True)[:-1]]


def _quantiles(column: NumericProfile | None) -> list[float] | None:
    if column is None or column.sketch.is_empty():
        return None
    return [float(v) for v in column.sketch.get_quantiles(list(QUANTILE_RANKS))]


def numeric_distribution(
    reference: NumericProfile | None,
    current: NumericProfile | None,
    bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """Both numeric sketches read at the same points.

    ``edges`` are ``bins + 1`` equal steps from the lower min to the higher max of the two
    sketches; ``*_pmf[i]`` is the share in ``[edges[i], edges[i+1])`` (the last bin holds the
    max). ``cdf_x`` are :data:`CDF_POINTS` equal steps over the same span and ``*_cdf`` is
    ``P(X <= x)`` there. A side without values has None in place of its figures.
    """
    if not 1 <= bins <= MAX_BINS:
        raise InvalidInput(f"bins must be between 1 and {MAX_BINS}")
    out: dict[str, Any] = {
        "kind": "numeric",
        "reference": _side(reference),
        "current": _side(current),
        "edges": [],
        "reference_pmf": None,
        "current_pmf": None,
        "cdf_x": [],
        "reference_cdf": None,
        "current_cdf": None,
        "quantile_ranks": list(QUANTILE_RANKS),
        "reference_quantiles": _quantiles(reference),
        "current_quantiles": _quantiles(current),
    }
    span = _span(reference, current)
    if span is None:
        return out
    low, high = span
    if high <= low:  # one value on both sides: one bin holds everything
        out["edges"] = [low, high]
        out["reference_pmf"] = None if _read(reference, "pmf", []) is None else [1.0]
        out["current_pmf"] = None if _read(current, "pmf", []) is None else [1.0]
        out["cdf_x"] = [low]
        out["reference_cdf"] = _read(reference, "cdf", [low])
        out["current_cdf"] = _read(current, "cdf", [low])
        return out
    step = (high - low) / bins
    edges = [low + i * step for i in range(bins)] + [high]
    interior = edges[1:-1]
    out["edges"] = edges
    # get_pmf(splits) gives len(splits) + 1 masses: (-inf, s1), [s1, s2), ..., [sk, +inf).
    out["reference_pmf"] = _read(reference, "pmf", interior)
    out["current_pmf"] = _read(current, "pmf", interior)
    cdf_step = (high - low) / (CDF_POINTS - 1)
    xs = [low + i * cdf_step for i in range(CDF_POINTS - 1)] + [high]
    out["cdf_x"] = xs
    out["reference_cdf"] = _read(reference, "cdf", xs)
    out["current_cdf"] = _read(current, "cdf", xs)
    return out


# --- categorical --------------------------------------------------------------------------


def _cat_side(column: CategoricalProfile | None) -> dict[str, Any]:
    if column is None:
        return {"present": False, "count": 0, "missing": 0, "n": 0, "error": None}
    return {
        "present": True,
        "count": column.count,
        "missing": column.missing,
        "n": column.n,
        # a-priori bound on each estimate, as a share of the sketch's total weight
        "error": float(column.sketch.epsilon),
    }


def categorical_distribution(
    reference: CategoricalProfile | None,
    current: CategoricalProfile | None,
    limit: int = MAX_ITEMS,
) -> dict[str, Any]:
    """Estimated count per category on both sides, the largest first; beyond ``limit``
    categories the rest are summed into :data:`OTHER`."""
    ref = reference.frequencies() if reference is not None else {}
    cur = current.frequencies() if current is not None else {}
    ref_total = sum(ref.values()) or 1.0
    cur_total = sum(cur.values()) or 1.0
    keys = sorted(
        set(ref) | set(cur),
        key=lambda k: (
            k == OTHER,
            -max(ref.get(k, 0.0) / ref_total, cur.get(k, 0.0) / cur_total),
            k,
        ),
    )
    shown = [k for k in keys if k != OTHER][:limit]
    rest = [k for k in keys if k not in shown]
    rows = [_item(k, ref.get(k, 0.0), cur.get(k, 0.0), ref_total, cur_total) for k in shown]
    if rest:
        r = sum(ref.get(k, 0.0) for k in rest)
        c = sum(cur.get(k, 0.0) for k in rest)
        rows.append(_item(OTHER, r, c, ref_total, cur_total))
    return {
        "kind": "categorical",
        "reference": _cat_side(reference),
        "current": _cat_side(current),
        "items": rows,
    }


def _item(name: str, ref: float, cur: float, ref_total: float, cur_total: float) -> dict[str, Any]:
    return {
        "item": name,
        "reference": round(ref),
        "current": round(cur),
        "reference_share": round(ref / ref_total, 6),
        "current_share": round(cur / cur_total, 6),
    }


def distribution(
    reference: ColumnProfile | None, current: ColumnProfile | None, bins: int = DEFAULT_BINS
) -> dict[str, Any]:
    """The right reading for the feature's kind (the reference's, else the current's)."""
    kind_of = reference if reference is not None else current
    if kind_of is None:
        raise InvalidInput("a distribution needs a reference or a current sketch")
    if isinstance(kind_of, NumericProfile):
        out = numeric_distribution(
            reference if isinstance(reference, NumericProfile) else None,
            current if isinstance(current, NumericProfile) else None,
            bins,
        )
    else:
        out = categorical_distribution(
            reference if isinstance(reference, CategoricalProfile) else None,
            current if isinstance(current, CategoricalProfile) else None,
        )
    changed = reference is not None and current is not None and reference.kind != current.kind
    out["kind_changed"] = (
        f"{reference.kind} in the reference, {current.kind} now: only the reference is shown"
        if changed and reference is not None and current is not None
        else None
    )
    return out
