"""Drift statistics computed from sketches only: PSI, Kolmogorov-Smirnov, Jensen-Shannon.

Every statistic compares a *current* profile (the merged recent windows of one site and
model version) with the *reference* profile uploaded with the version (computed over the
training data on the user's machine). Neither side is raw data.

Defaults (``DEFAULT_THRESHOLDS``), and where they come from:

- ``psi`` 0.1 — the Population Stability Index threshold Evidently uses by default for
  its ``psi`` test; the credit-scoring rule of thumb (Siddiqi, *Credit Risk Scorecards*,
  2006) reads < 0.1 as stable, 0.1-0.25 as a moderate shift and > 0.25 as a major one.
  Bins are the reference deciles, empty bins floored at 1e-4 as in Evidently.
- ``ks_pvalue`` 0.05 — the significance level of Evidently's ``ks`` test and the "drift"
  p-value threshold of whylogs' KS-based column drift. The statistic D is first reduced
  by both sketches' rank-error bound (as DataSketches' own ``ks_test`` does), so sketch
  noise alone never raises a flag.
- ``js`` 0.1 — the Jensen-Shannon distance (base 2, in [0, 1]) threshold Evidently uses
  by default for categorical columns with more than 1000 objects.
- ``min_samples`` 100 — fewer sampled values than this in the current profile gives
  "insufficient data" rather than a verdict (NannyML likewise warns on small chunks).

Users override any of them per model (``PUT /api/v1/models/{name}/drift-thresholds``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from modelfleet.errors import InvalidInput
from modelfleet.monitoring.profiles import (
    CategoricalProfile,
    ColumnProfile,
    DatasetProfile,
    NumericProfile,
    quantiles_of,
    sorted_points,
)

#: Reference quantile bins of PSI: deciles, as Evidently and NannyML do.
PSI_BINS = 10
#: Floor of an empty bin's share in PSI (Evidently uses the same).
PSI_FLOOR = 1e-4

DEFAULT_THRESHOLDS: dict[str, float] = {
    "psi": 0.1,
    "ks_pvalue": 0.05,
    "js": 0.1,
    "min_samples": 100,
    "window_s": 3600.0,
}
THRESHOLD_HELP: dict[str, str] = {
    "psi": "flag a numeric feature when PSI >= this (Evidently default 0.1)",
    "ks_pvalue": "flag a numeric feature when the KS p-value < this (Evidently/whylogs 0.05)",
    "js": "flag a categorical feature when the JS distance >= this (Evidently default 0.1)",
    "min_samples": "no verdict below this many sampled values in the current windows",
    "window_s": "how far back (seconds of window end time) the current profile reaches",
}


def check_thresholds(values: dict[str, Any]) -> dict[str, float]:
    """Validate a partial override: known keys, finite non-negative numbers."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if key not in DEFAULT_THRESHOLDS:
            raise InvalidInput(
                f"unknown drift threshold {key!r}; known: {', '.join(DEFAULT_THRESHOLDS)}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"drift threshold {key} must be a number")
        if not math.isfinite(float(value)) or float(value) < 0:
            raise InvalidInput(f"drift threshold {key} must be finite and >= 0")
        out[key] = float(value)
    return out


# --- statistics ------------------------------------------------------------------------


def _bin_shares(column: NumericProfile, edges: list[float]) -> np.ndarray[Any, np.dtype[Any]]:
    # get_cdf(edges) gives P(X < edge) for each edge and a final 1.0: bins [e_i, e_i+1).
    cdf = np.asarray(column.sketch.get_cdf(edges), dtype=np.float64)
    return np.diff(np.concatenate([[0.0], cdf]))


def psi_edges(reference: NumericProfile, bins: int = PSI_BINS) -> list[float]:
    """Interior bin edges at the reference quantiles, duplicates removed."""
    ranks = [i / bins for i in range(1, bins)]
    return sorted(set(quantiles_of(reference, ranks)))


def psi(reference: NumericProfile, current: NumericProfile, bins: int = PSI_BINS) -> float:
    """Population Stability Index over the reference's quantile bins."""
    edges = psi_edges(reference, bins)
    if reference.sketch.is_empty() or current.sketch.is_empty():
        return math.nan
    expected = np.maximum(_bin_shares(reference, edges), PSI_FLOOR)
    actual = np.maximum(_bin_shares(current, edges), PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks_statistic(reference: NumericProfile, current: NumericProfile) -> float:
    """Largest gap between the two sketched CDFs, evaluated at every retained value."""
    if reference.sketch.is_empty() or current.sketch.is_empty():
        return math.nan
    points = sorted(set(sorted_points(reference)) | set(sorted_points(current)))
    ref_cdf = np.asarray(reference.sketch.get_cdf(points, True)[:-1])
    cur_cdf = np.asarray(current.sketch.get_cdf(points, True)[:-1])
    return float(np.max(np.abs(ref_cdf - cur_cdf)))


def kolmogorov_pvalue(d: float, n: int, m: int) -> float:
    """Asymptotic two-sample KS p-value (Numerical Recipes' Q_KS with the small-n term)."""
    if n <= 0 or m <= 0 or math.isnan(d):
        return math.nan
    effective = math.sqrt(n * m / (n + m))
    lam = (effective + 0.12 + 0.11 / effective) * d
    if lam < 1e-3:
        return 1.0
    total = 0.0
    for k in range(1, 101):
        term = 2 * (-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam)
        total += term
        if abs(term) < 1e-12:
            break
    return min(1.0, max(0.0, total))


def ks_test(reference: NumericProfile, current: NumericProfile) -> tuple[float, float]:
    """``(D, p-value)``; the p-value uses D minus both sketches' rank-error bounds."""
    d = ks_statistic(reference, current)
    if math.isnan(d):
        return d, math.nan
    slack = reference.rank_error() + current.rank_error()
    return d, kolmogorov_pvalue(max(0.0, d - slack), reference.n, current.n)


def js_distance(reference: CategoricalProfile, current: CategoricalProfile) -> float:
    """Jensen-Shannon distance (base 2) between the category frequencies."""
    ref = reference.frequencies()
    cur = current.frequencies()
    keys = sorted(set(ref) | set(cur))
    p = np.array([ref.get(k, 0.0) for k in keys])
    q = np.array([cur.get(k, 0.0) for k in keys])
    if p.sum() <= 0 or q.sum() <= 0:
        return math.nan
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return math.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2))


# --- verdicts --------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's comparison: statistics, the thresholds used, and the verdict."""

    feature: str
    label: str | None
    kind: str  # numeric | categorical
    role: str  # input | output
    reference_n: int
    current_n: int
    psi: float | None
    ks: float | None
    ks_pvalue: float | None
    js: float | None
    drift: bool | None  # None: insufficient data or no reference for the feature
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["reasons"] = list(self.reasons)
        for key in ("psi", "ks", "ks_pvalue", "js"):
            value = doc[key]
            doc[key] = None if value is None or math.isnan(value) else round(value, 6)
        return doc


def compare_column(
    feature: str,
    role: str,
    reference: ColumnProfile,
    current: ColumnProfile,
    thresholds: dict[str, float],
    label: str | None = None,
) -> FeatureDrift:
    enough = current.n >= thresholds["min_samples"] and reference.n > 0
    if isinstance(reference, NumericProfile) and isinstance(current, NumericProfile):
        value_psi = psi(reference, current)
        d, p = ks_test(reference, current)
        reasons = []
        if enough and value_psi >= thresholds["psi"]:
            reasons.append(f"psi {value_psi:.3f} >= {thresholds['psi']:g}")
        if enough and not math.isnan(p) and p < thresholds["ks_pvalue"]:
            reasons.append(f"ks p-value {p:.2g} < {thresholds['ks_pvalue']:g} (D={d:.3f})")
        return FeatureDrift(
            feature, label, "numeric", role, reference.n, current.n,
            value_psi, d, p, None, bool(reasons) if enough else None, tuple(reasons),
        )  # fmt: skip
    if isinstance(reference, CategoricalProfile) and isinstance(current, CategoricalProfile):
        value_js = js_distance(reference, current)
        reasons = []
        if enough and value_js >= thresholds["js"]:
            reasons.append(f"js {value_js:.3f} >= {thresholds['js']:g}")
        return FeatureDrift(
            feature, label, "categorical", role, reference.n, current.n,
            None, None, None, value_js, bool(reasons) if enough else None, tuple(reasons),
        )  # fmt: skip
    return FeatureDrift(
        feature, label, current.kind, role, reference.n, current.n,
        None, None, None, None, True, (f"kind changed: {reference.kind} -> {current.kind}",),
    )  # fmt: skip


def compare(
    reference: DatasetProfile,
    inputs: DatasetProfile,
    outputs: DatasetProfile,
    thresholds: dict[str, float],
) -> list[FeatureDrift]:
    """Every feature of the reference (inputs) and every output the reference profiles."""
    results: list[FeatureDrift] = []
    for role, current in (("input", inputs), ("output", outputs)):
        for name in sorted(current.columns):
            ref = reference.columns.get(name)
            if ref is None:
                continue
            label = reference.labels.get(name)
            results.append(
                compare_column(name, role, ref, current.columns[name], thresholds, label)
            )
    for name in sorted(set(reference.columns) - set(inputs.columns) - set(outputs.columns)):
        ref = reference.columns[name]
        results.append(
            FeatureDrift(
                name,
                reference.labels.get(name),
                ref.kind,
                "input",
                ref.n,
                0,
                None,
                None,
                None,
                None,
                None,
                ("no traffic for this feature",),
            )
        )
    return results
