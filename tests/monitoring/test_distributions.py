"""A feature's distributions read back from sketches, and the feature endpoint's rules."""

from __future__ import annotations

import math
import time
import uuid

import numpy as np
import pytest

from modelfleet.errors import InvalidInput
from modelfleet.monitoring.distributions import (
    categorical_distribution,
    distribution,
    heat_level,
    numeric_distribution,
    stat_ratio,
)
from modelfleet.monitoring.profiles import (
    OTHER,
    CategoricalProfile,
    DatasetProfile,
    NumericProfile,
    profile_array,
)
from tests.monitoring.test_api_telemetry import enrolled_site

THRESHOLDS = {"psi": 0.1, "ks_pvalue": 0.05, "js": 0.1}


def numeric(values: np.ndarray) -> NumericProfile:
    column = NumericProfile()
    column.update(values)
    return column


def test_numeric_reading_matches_the_data_within_the_rank_error() -> None:
    rng = np.random.default_rng(3)
    ref_values = rng.normal(0, 1, 20_000)
    cur_values = np.concatenate([rng.normal(1, 1, 5_000), [np.nan] * 7])
    doc = numeric_distribution(numeric(ref_values), numeric(cur_values), bins=10)
    assert doc["current"]["count"] == 5_007
    assert doc["current"]["missing"] == 7
    assert doc["current"]["n"] == 5_000
    assert len(doc["edges"]) == 11
    assert len(doc["reference_pmf"]) == 10
    assert math.isclose(sum(doc["reference_pmf"]), 1.0, abs_tol=1e-6)
    bound = doc["reference"]["rank_error"] + 1e-3
    for x, cdf in zip(doc["cdf_x"], doc["reference_cdf"], strict=True):
        assert abs(cdf - float(np.mean(ref_values <= x))) <= bound
    edges = np.array(doc["edges"])
    counts, _ = np.histogram(cur_values[np.isfinite(cur_values)], bins=edges)
    exact = counts / counts.sum()
    assert np.max(np.abs(np.array(doc["current_pmf"]) - exact)) <= 2 * bound
    medians = doc["reference_quantiles"][3], doc["current_quantiles"][3]
    assert abs(medians[0]) < 0.1
    assert abs(medians[1] - 1) < 0.1


def test_one_side_missing_and_a_constant_feature() -> None:
    only_ref = numeric_distribution(numeric(np.arange(100.0)), None)
    assert only_ref["current"]["present"] is False
    assert only_ref["current_cdf"] is None
    assert only_ref["reference_cdf"][-1] == 1.0
    constant = numeric_distribution(numeric(np.full(50, 3.0)), numeric(np.full(80, 3.0)))
    assert constant["edges"] == [3.0, 3.0]
    assert constant["current_pmf"] == [1.0]
    with pytest.raises(InvalidInput):
        numeric_distribution(None, None, bins=0)
    with pytest.raises(InvalidInput):
        distribution(None, None)


def test_categories_side_by_side_largest_first_rest_in_other() -> None:
    ref, cur = CategoricalProfile(), CategoricalProfile()
    ref.update(np.array(["a"] * 60 + ["b"] * 30 + ["c"] * 10 + [None] * 4, dtype=object))
    cur.update(np.array(["b"] * 70 + ["a"] * 20 + ["d"] * 10, dtype=object))
    doc = categorical_distribution(ref, cur)
    rows = {r["item"]: r for r in doc["items"]}
    assert [r["item"] for r in doc["items"]][:2] == ["b", "a"]
    assert rows["a"]["reference"] == 60
    assert rows["a"]["current"] == 20
    assert rows["d"]["reference"] == 0
    assert rows["d"]["current_share"] == pytest.approx(0.1)
    assert doc["reference"]["missing"] == 4
    assert doc["reference"]["error"] > 0
    capped = categorical_distribution(ref, cur, limit=2)
    assert [r["item"] for r in capped["items"]] == ["b", "a", OTHER]
    assert capped["items"][-1]["current"] == 10
    assert capped["items"][-1]["reference"] == 10


def test_heat_levels_put_the_threshold_between_5_and_6() -> None:
    assert heat_level(None) is None
    assert heat_level(0.0) == 0
    assert heat_level(0.99) == 5
    assert heat_level(1.0) == 6
    assert heat_level(2.5) == 7
    assert heat_level(5) == 8
    assert heat_level(100.0) == 9
    assert heat_level(math.inf) == 9
    assert stat_ratio("psi", {"psi": 0.2}, THRESHOLDS) == pytest.approx(2.0)
    assert stat_ratio("js", {"js": None}, THRESHOLDS) is None
    assert stat_ratio("ks", {"ks_pvalue": 0.05}, THRESHOLDS) == pytest.approx(1.0)
    assert stat_ratio("ks", {"ks_pvalue": 1.0}, THRESHOLDS) == 0.0
    assert stat_ratio("ks", {"ks_pvalue": 0.0}, THRESHOLDS) == math.inf
    with pytest.raises(InvalidInput):
        stat_ratio("chi2", {}, THRESHOLDS)


# --- the endpoint -----------------------------------------------------------------------


def _window(profile: DatasetProfile) -> dict:
    now = time.time()
    return {
        "id": uuid.uuid4().hex, "model": "pump", "version": 1, "start": now - 5, "end": now,
        "requests": 200, "latency": {"4": 200}, "inputs": profile.to_dict()["columns"],
        "outputs": {},
    }  # fmt: skip


@pytest.fixture
def drifting_hub(hub_factory, tiny_onnx):
    hub = hub_factory()
    with tiny_onnx().open("rb") as fh:
        hub.client.post(
            "/api/v1/models/pump/versions", content=fh.read(), headers=hub.headers()
        ).raise_for_status()
    rng = np.random.default_rng(5)
    reference = profile_array(rng.normal(size=(2000, 2)), labels=["temp", "flow"])
    hub.client.put(
        "/api/v1/models/pump/versions/1/reference-profile",
        json=reference.to_dict(),
        headers=hub.headers(),
    ).raise_for_status()
    site = enrolled_site(hub, "plant-a")
    current = rng.normal(size=(1000, 2))
    current[:, 1] += 2.0
    body = {
        "batch_id": uuid.uuid4().hex,
        "spool_id": "s",
        "windows": [_window(profile_array(current))],
    }
    hub.client.post(
        "/api/v1/sites/plant-a/telemetry", json=body, headers=hub.headers(site)
    ).raise_for_status()
    return hub


def test_feature_endpoint_reads_both_sketches(drifting_hub) -> None:
    hub = drifting_hub
    viewer = hub.headers(hub.token("viewer"))
    url = "/api/v1/telemetry/drift/pump/features/X%5B1%5D"
    got = hub.client.get(url, params={"site": "plant-a", "stat": "psi"}, headers=viewer)
    assert got.status_code == 200, got.text
    doc = got.json()
    assert doc["version"] == 1
    assert doc["label"] == "flow"
    assert doc["kind"] == "numeric"
    assert doc["reference"]["count"] == 2000
    assert doc["current"]["count"] == 1000
    assert doc["drift"]["drift"] is True
    assert doc["drift"]["psi"] > 0.5
    assert 0 < doc["current"]["rank_error"] < 0.05
    assert len(doc["reference_pmf"]) == 20
    assert len(doc["cdf_x"]) == len(doc["current_cdf"])
    assert "sketches" in doc["approximate"]
    steady = hub.client.get(
        "/api/v1/telemetry/drift/pump/features/X%5B0%5D",
        params={"site": "plant-a", "version": 1, "bins": 5},
        headers=viewer,
    ).json()
    assert steady["drift"]["drift"] is False
    assert len(steady["edges"]) == 6


def test_feature_endpoint_refuses_unknowns_and_bad_input(drifting_hub) -> None:
    hub = drifting_hub
    url = "/api/v1/telemetry/drift/{}/features/{}"
    ok = {"site": "plant-a"}
    cases = [
        (url.format("pump", "nope"), ok, 404, "'nope'"),
        (url.format("ghost", "X%5B0%5D"), ok, 404, "'ghost'"),
        (url.format("pump", "X%5B0%5D"), {"site": "plant-z"}, 404, "'plant-z'"),
        (url.format("pump", "X%5B0%5D"), {**ok, "version": 7}, 404, "version 7"),
        (url.format("pump", "X%5B0%5D"), {**ok, "stat": "chi2"}, 400, "stat"),
        (url.format("pump", "X%5B0%5D"), {**ok, "bins": 0}, 400, "bins"),
        (url.format("pump", "X%5B0%5D"), {**ok, "bins": 10_000}, 400, "bins"),
        (url.format("pump", "X%5B0%5D"), {}, 400, "site"),
        (url.format("pump", "X%5B0%5D"), {"site": "../x"}, 400, ""),
    ]
    for path, params, status, named in cases:
        got = hub.client.get(path, params=params, headers=hub.headers())
        assert got.status_code == status, (path, params, got.text)
        assert named in got.json()["error"]["message"], got.text
    assert hub.client.get(url.format("pump", "X%5B0%5D"), params=ok).status_code == 401
