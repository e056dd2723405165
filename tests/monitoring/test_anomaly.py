"""The anomaly detector (monitoring/anomaly.py) on windows built as a site builds them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from modelfleet.errors import InvalidInput
from modelfleet.monitoring.anomaly import AnomalySettings, WindowStats, check_settings, detect
from modelfleet.monitoring.histograms import LATENCY_BOUNDS, latency_bucket, sparse
from modelfleet.monitoring.profiles import DatasetProfile

T0 = 1_800_000_000.0
WINDOW_S = 10.0
BUCKET_S = 60.0
PER_BUCKET = int(BUCKET_S / WINDOW_S)


@dataclass
class Shape:
    """What one window looks like; a fault changes some fields for some windows."""

    requests: int = 30
    error_rate: float = 0.002
    latency_s: float = 0.003
    stuck: float | None = None
    missing: float = 0.0
    score_shift: float = 0.0


Fault = Callable[[int, Shape], None]  # (window index, shape) -> edits the shape


def windows(n_buckets: int, fault: Fault | None = None, seed: int = 0) -> list[WindowStats]:
    rng = np.random.default_rng(seed)
    out = []
    for w in range(n_buckets * PER_BUCKET):
        shape = Shape()
        if fault is not None:
            fault(w, shape)
        n = int(rng.poisson(shape.requests))
        errors = int(rng.binomial(n, shape.error_rate))
        counts = [0] * (len(LATENCY_BOUNDS) + 1)
        for value in rng.lognormal(np.log(shape.latency_s), 0.3, size=n):
            counts[latency_bucket(float(value))] += 1
        x = rng.normal([1.0, 300.0], [0.5, 2.0], size=(n, 2))
        if shape.stuck is not None:
            x[:, 1] = shape.stuck
        x[rng.random(n) < shape.missing, 0] = np.nan
        inputs, outputs = DatasetProfile(), DatasetProfile()
        inputs.update_tensor("X", x)
        outputs.update_tensor("score", rng.beta(2, 5, size=n) + shape.score_shift)
        start = T0 + w * WINDOW_S
        out.append(
            WindowStats(
                start=start,
                end=start + WINDOW_S,
                version=1,
                requests=n,
                errors=errors,
                latency=sparse(counts),
                inputs=inputs.to_dict()["columns"],
                outputs=outputs.to_dict()["columns"],
            )
        )
    return out


def run(ws: list[WindowStats], n_buckets: int, **settings: float) -> list:
    now = T0 + n_buckets * BUCKET_S + 30
    return detect(ws, AnomalySettings(**settings), site="s", model="m", now=now)


def during(first: int, last: int, edit: Callable[[Shape], None]) -> Fault:
    """A fault over buckets [first, last)."""

    def apply(w: int, shape: Shape) -> None:
        if first * PER_BUCKET <= w < last * PER_BUCKET:
            edit(shape)

    return apply


def test_a_clean_series_gives_no_anomaly() -> None:
    for seed in range(3):
        assert run(windows(40, seed=seed), 40) == []


@pytest.mark.parametrize(
    ("edit", "metric", "higher"),
    [
        (lambda s: setattr(s, "error_rate", 0.2), "error_rate", True),
        (lambda s: setattr(s, "latency_s", 0.03), "p99", True),
        (lambda s: setattr(s, "requests", 5), "request_rate", False),
        (lambda s: setattr(s, "missing", 0.4), "missing:X[0]", True),
        (lambda s: setattr(s, "score_shift", 0.4), "output_score", True),
    ],
)
def test_each_fault_is_found_with_its_start_and_end(edit, metric, higher) -> None:
    found = run(windows(40, during(25, 28, edit)), 40)
    assert [a.metric for a in found] == [metric], found
    (a,) = found
    assert a.start.timestamp() == T0 + 25 * BUCKET_S
    assert a.end is not None
    assert a.end.timestamp() == T0 + 28 * BUCKET_S
    assert a.detected_at.timestamp() == T0 + 26 * BUCKET_S  # at the end of its first bucket
    assert (a.observed > a.expected) is higher
    assert a.score >= AnomalySettings().sensitivity
    assert a.severity in ("warning", "critical")
    assert not a.open
    assert a.as_dict()["open"] is False


def test_an_ongoing_fault_is_open() -> None:
    found = run(windows(30, during(27, 99, lambda s: setattr(s, "error_rate", 0.3))), 30)
    assert [(a.metric, a.end) for a in found] == [("error_rate", None)]
    assert found[0].open
    assert found[0].severity == "critical"


def test_a_stuck_sensor_needs_k_windows_and_a_varying_history() -> None:
    stuck = during(20, 99, lambda s: setattr(s, "stuck", 301.5))
    found = [a for a in run(windows(25, stuck), 25) if a.metric.startswith("stuck")]
    assert len(found) == 1
    (a,) = found
    assert a.metric == "stuck:X[1]"
    assert a.open
    assert a.observed == 301.5
    assert abs(a.expected - 300.0) < 1.5  # the history's median
    k = AnomalySettings().stuck_windows
    assert a.start.timestamp() == T0 + 20 * BUCKET_S
    assert a.detected_at.timestamp() == T0 + 20 * BUCKET_S + k * WINDOW_S
    # Stuck from the very start: the feature never varied, it is a constant, not a fault.
    constant = list(run(windows(25, lambda w, s: setattr(s, "stuck", 7.0)), 25))
    assert not [a for a in constant if a.metric.startswith("stuck")]

    # Fewer than k windows stuck: nothing.
    def short(w: int, shape: Shape) -> None:
        if 20 * PER_BUCKET <= w < 20 * PER_BUCKET + k - 1:
            shape.stuck = 301.5

    assert not [a for a in run(windows(25, short), 25) if a.metric.startswith("stuck")]


def test_traffic_that_stops_is_a_drop_to_zero() -> None:
    ws = [w for w in windows(30) if w.start < T0 + 26 * BUCKET_S]  # nothing after bucket 26
    (a,) = run(ws, 30)
    assert (a.metric, a.observed, a.end) == ("request_rate", 0.0, None)
    assert a.start.timestamp() == T0 + 26 * BUCKET_S
    assert abs(a.expected - 30 / WINDOW_S) < 0.5  # ~3 requests/s before


def test_the_warm_up_is_respected() -> None:
    burst = during(5, 7, lambda s: setattr(s, "error_rate", 0.3))
    assert run(windows(30, burst), 30) == []  # bucket 5 < warmup 10: not judged
    assert [a.metric for a in run(windows(30, burst), 30, warmup=4)] == ["error_rate"]


def test_sensitivity_changes_the_verdict() -> None:
    mild = during(25, 27, lambda s: setattr(s, "latency_s", 0.0075))  # 2.5x
    assert [a.metric for a in run(windows(40, mild), 40, sensitivity=3)] == ["p99"]
    assert run(windows(40, mild), 40, sensitivity=20) == []


def test_the_newest_bucket_waits_to_settle() -> None:
    ws = windows(30, during(29, 30, lambda s: setattr(s, "error_rate", 0.3)))
    early = detect(ws, AnomalySettings(), site="s", model="m", now=T0 + 30 * BUCKET_S + 1)
    assert early == []
    assert [a.metric for a in run(ws, 30)] == ["error_rate"]


@pytest.mark.parametrize(
    "bad",
    [
        {"sensitivity": 0.5},
        {"sensitivity": "high"},
        {"warmup": 2},
        {"warmup": 50, "history": 20},
        {"bucket_s": 1e9},
        {"nope": 1},
    ],
)
def test_bad_settings_are_refused(bad) -> None:
    with pytest.raises(InvalidInput):
        check_settings(bad)


def test_settings_have_documented_defaults() -> None:
    assert check_settings({}) == AnomalySettings()
    assert check_settings({"sensitivity": 6}).sensitivity == 6.0


def test_a_feature_whose_kind_changes_does_not_break_detection() -> None:
    ws = windows(30, during(25, 28, lambda s: setattr(s, "error_rate", 0.3)))
    odd = DatasetProfile()
    odd.update_column("X[0]", np.asarray(["a", "b", "c"], dtype=object))  # text, not numbers
    ws[100] = WindowStats(**{**ws[100].__dict__, "inputs": odd.to_dict()["columns"]})
    assert [a.metric for a in run(ws, 30)] == ["error_rate"]
