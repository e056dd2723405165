"""Sketch-based statistics against scipy/numpy on the raw data (tolerances in docs)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from modelfleet.monitoring import drift
from modelfleet.monitoring.histograms import LATENCY_BOUNDS, histogram_quantile, latency_bucket
from modelfleet.monitoring.profiles import (
    OTHER,
    DatasetProfile,
    NumericProfile,
    generalise,
    profile_array,
    profile_csv,
)

#: Documented in docs/monitoring.md.
PSI_TOL_ABS, PSI_TOL_REL = 0.02, 0.10


def numeric(values: np.ndarray) -> NumericProfile:
    column = NumericProfile()
    column.update(values)
    return column


def exact_psi(ref: np.ndarray, cur: np.ndarray) -> float:
    edges = np.unique(np.quantile(ref, np.arange(1, 10) / 10))
    e = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1)
    a = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1)
    e = np.maximum(e / e.sum(), 1e-4)
    a = np.maximum(a / a.sum(), 1e-4)
    return float(np.sum((a - e) * np.log(a / e)))


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("n", [2_000, 50_000])
def test_psi_and_ks_match_raw_data(shift: float, n: int) -> None:
    rng = np.random.default_rng(int(shift * 10) + n)
    ref_raw = rng.normal(size=n)
    cur_raw = rng.normal(loc=shift, size=n // 2)
    ref, cur = numeric(ref_raw), numeric(cur_raw)

    expected_psi = exact_psi(ref_raw, cur_raw)
    got_psi = drift.psi(ref, cur)
    assert abs(got_psi - expected_psi) <= PSI_TOL_ABS + PSI_TOL_REL * expected_psi

    expected_d = ks_2samp(ref_raw, cur_raw).statistic
    got_d = drift.ks_statistic(ref, cur)
    assert abs(got_d - expected_d) <= ref.rank_error() + cur.rank_error()
    print(f"n={n} shift={shift}: psi {got_psi:.4f} vs {expected_psi:.4f}, "
          f"D {got_d:.4f} vs {expected_d:.4f}")  # fmt: skip


def test_js_matches_scipy_and_rare_categories_are_folded() -> None:
    rng = np.random.default_rng(3)
    cats = np.array(["red", "green", "blue", "black", "white"])
    ref_raw = rng.choice(cats, size=20_000, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    cur_raw = rng.choice(cats, size=10_000, p=[0.2, 0.3, 0.25, 0.15, 0.1])
    ref, cur = DatasetProfile(), DatasetProfile()
    ref.update_column("c", ref_raw.astype(object))
    cur.update_column("c", cur_raw.astype(object))
    p = np.array([np.mean(ref_raw == c) for c in cats])
    q = np.array([np.mean(cur_raw == c) for c in cats])
    expected = jensenshannon(p, q, base=2)
    ref_col, cur_col = ref.columns["c"], cur.columns["c"]
    assert ref_col.kind == "categorical"
    assert cur_col.kind == "categorical"
    assert drift.js_distance(ref_col, cur_col) == pytest.approx(expected, abs=1e-9)

    # A value seen once never leaves in a serialised profile.
    once = DatasetProfile()
    once.update_column("c", np.array(["a"] * 50 + ["PATIENT-0042"], dtype=object))
    restored = DatasetProfile.from_dict(once.to_dict())
    freq = restored.columns["c"].frequencies()  # type: ignore[union-attr]
    assert freq == {"a": 50.0, OTHER: 1.0}
    assert "PATIENT-0042" not in str(once.to_dict())


def test_profiles_merge_like_the_union_and_round_trip() -> None:
    rng = np.random.default_rng(5)
    parts = [rng.normal(size=(1000, 3)) for _ in range(5)]
    merged = DatasetProfile()
    for part in parts:
        merged.merge(DatasetProfile.from_dict(profile_array(part).to_dict()))
    whole = np.concatenate(parts)
    col = merged.columns["X[1]"]
    assert isinstance(col, NumericProfile)
    assert col.count == 5000
    assert col.missing == 0
    assert abs(drift.ks_statistic(col, numeric(whole[:, 1]))) < 2 * col.rank_error()
    assert col.min == generalise(whole[:, 1]).min()


def test_generalisation_hides_exact_values_within_a_tenth_of_a_percent() -> None:
    values = np.array([1234.5678, -0.00123456, 3.14159265, 0.0, np.nan, np.inf])
    out = generalise(values)
    finite = np.isfinite(values) & (values != 0)
    assert np.all(out[finite] != values[finite])
    assert np.all(np.abs(out[finite] - values[finite]) <= np.abs(values[finite]) * 2**-10)
    profile = NumericProfile()
    profile.update(values)
    assert profile.count == 6
    assert profile.missing == 2


def test_latency_histogram_quantiles_within_one_bucket() -> None:
    rng = np.random.default_rng(9)
    latencies = rng.lognormal(mean=-6, sigma=0.8, size=20_000)
    counts = [0] * (len(LATENCY_BOUNDS) + 1)
    for value in latencies:
        counts[latency_bucket(float(value))] += 1
    for q in (0.5, 0.95, 0.99):
        exact = float(np.quantile(latencies, q))
        approx = histogram_quantile(counts, q, LATENCY_BOUNDS)
        assert approx is not None
        assert abs(approx - exact) / exact < 0.19


def test_profile_csv_maps_columns_onto_a_single_input(tmp_path) -> None:
    csv = tmp_path / "train.csv"
    csv.write_text("a,b,label\n1,2,x\n3,,y\n5,6,x\n")
    inputs = [{"name": "X", "shape": [-1, 2]}]
    profile = profile_csv(csv, columns=["a", "b"], inputs=inputs)
    assert sorted(profile.columns) == ["X[0]", "X[1]"]
    assert profile.labels == {"X[0]": "a", "X[1]": "b"}
    assert profile.columns["X[1]"].missing == 1
    named = profile_csv(csv)
    assert named.columns["label"].kind == "categorical"
