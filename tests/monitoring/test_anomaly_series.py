"""The incremental state of one site x model equals the from-scratch ``detect()`` on the
same windows: fed in passes, with late windows, with faults of every kind."""

from __future__ import annotations

import math
import random

import pytest

from modelfleet.monitoring.anomaly import AnomalySettings, WindowStats, detect
from modelfleet.monitoring.anomaly_series import SeriesState
from tests.monitoring.anomaly_compare import assert_same_anomalies
from tests.monitoring.test_anomaly import BUCKET_S, PER_BUCKET, T0, Shape, windows

SETTINGS = AnomalySettings(warmup=5, history=20)


def _faulty(w: int, shape: Shape) -> None:
    bucket = w // PER_BUCKET
    if 20 <= bucket < 26:
        shape.error_rate = 0.3
    if 30 <= bucket < 34:
        shape.latency_s = 0.03
    if 40 <= bucket < 46:
        shape.stuck = 301.5
    if 50 <= bucket < 53:
        shape.requests = 3
    if 55 <= bucket < 58:
        shape.missing = 0.4
    if bucket >= 60:
        shape.score_shift = 0.3


def _feed(state: SeriesState, ws: list[WindowStats], passes: int, late: int, seed: int) -> float:
    """Feed ``ws`` in ``passes`` passes by end time; ``late`` windows of each pass are held
    back to the next pass (arriving after newer ones). Answers the last pass's time."""
    rng = random.Random(seed)
    per = math.ceil(len(ws) / passes)
    held: list[WindowStats] = []
    now = T0
    for p in range(passes):
        batch = ws[p * per : (p + 1) * per]
        now = batch[-1].end if batch else now
        arriving = held + batch
        held = rng.sample(batch, min(late, len(batch))) if p < passes - 1 else []
        arriving = [w for w in arriving if w not in held]
        rng.shuffle(arriving)
        for w in arriving:
            if not state.add(w):
                raise AssertionError("a late window fell into a judged bucket")
        state.advance(now)
    for w in held:
        state.add(w)
    return now


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fed_in_passes_the_state_equals_detect(seed: int) -> None:
    n = 70
    ws = windows(n, _faulty, seed=seed)
    state = SeriesState("s", "m", SETTINGS)
    # 2 windows held per pass of ~10: they arrive a pass late but within the settle time.
    _feed(state, ws, passes=n * 2, late=1, seed=seed)
    now = T0 + n * BUCKET_S + 30
    state.advance(now)
    expected = detect(ws, SETTINGS, site="s", model="m", now=now)
    assert_same_anomalies(state.anomalies(), expected)
    metrics = {a.metric for a in expected}
    assert {"error_rate", "p99", "stuck:X[1]", "request_rate", "missing:X[0]"} <= metrics


def test_every_intermediate_pass_equals_detect_on_what_arrived() -> None:
    n = 40
    ws = windows(n, _faulty, seed=3)
    state = SeriesState("s", "m", SETTINGS)
    for i, w in enumerate(ws):
        state.add(w)
        if i % 7 == 0:
            now = w.end + 5
            state.advance(now)
            reference = detect(ws[: i + 1], SETTINGS, site="s", model="m", now=now)
            assert_same_anomalies(state.anomalies(), reference)


def test_a_window_for_a_judged_bucket_is_refused_and_a_rebuild_matches() -> None:
    ws = windows(30, _faulty, seed=4)
    late, rest = ws[5], ws[:5] + ws[6:]
    state = SeriesState("s", "m", SETTINGS)
    for w in rest:
        state.add(w)
    now = T0 + 30 * BUCKET_S + 30
    state.advance(now)
    assert state.add(late) is False  # its bucket was judged: the owner rebuilds
    rebuilt = SeriesState("s", "m", SETTINGS)
    for w in ws:
        rebuilt.add(w)
    rebuilt.advance(now)
    assert_same_anomalies(rebuilt.anomalies(), detect(ws, SETTINGS, site="s", model="m", now=now))
