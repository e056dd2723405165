"""The hub's incremental anomaly passes over a real store equal the from-scratch
``detect()`` on the same windows: windows arriving pass by pass, some a pass late, one for
a bucket judged long ago (the series is rebuilt), then a retention compaction deleting
old windows (the state keeps what it judged). Runs on every store backend."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

from modelfleet.hub.anomalies import MAX_SINCE_S, Anomalies
from modelfleet.hub.store import Store
from modelfleet.hub.store.records import NewWindow
from modelfleet.monitoring.anomaly import AnomalySettings, WindowStats, detect
from tests.monitoring.anomaly_compare import assert_same_anomalies
from tests.monitoring.test_anomaly import T0, WINDOW_S, Shape, windows

SITES = ("s1", "s2")


def _faulty(w: int, shape: Shape) -> None:
    bucket = w // 6
    if 14 <= bucket < 18:
        shape.error_rate = 0.3
    if 22 <= bucket < 26:
        shape.stuck = 301.5
    if bucket >= 30:
        shape.latency_s = 0.03


def _new(site: str, i: int, w: WindowStats) -> NewWindow:
    return NewWindow(
        window_id=f"{site}-{i}", model="pump", version=w.version,
        start_at=datetime.fromtimestamp(w.start, UTC), end_at=datetime.fromtimestamp(w.end, UTC),
        requests=w.requests, errors=w.errors, rows=w.requests, latency_sum=0.0,
        outcomes={"ok": w.requests - w.errors, "error": w.errors}, latency=dict(w.latency),
        batch_sizes={}, profiles={"inputs": dict(w.inputs), "outputs": dict(w.outputs)},
    )  # fmt: skip


def _plain(found: list) -> list[dict]:
    out = []
    for a in found:
        d = a.as_dict()
        d["expected"] = None if math.isnan(d["expected"]) else d["expected"]
        out.append(d)
    return out


def _reference(shipped: dict[str, list[WindowStats]], now: float) -> list[dict]:
    found = []
    for site in SITES:
        found += detect(shipped[site], AnomalySettings(), site=site, model="pump", now=now)
    found.sort(key=lambda a: (a.start, a.site, a.model, a.metric))
    return _plain(found)


def test_incremental_passes_equal_detect_with_late_windows_and_compaction(store: Store) -> None:
    n_buckets = 40
    series = {site: windows(n_buckets, _faulty, seed=k) for k, site in enumerate(SITES)}
    clock = [T0]
    service = Anomalies(store.telemetry, clock=lambda: clock[0])
    rng = random.Random(1)
    shipped: dict[str, list[WindowStats]] = {site: [] for site in SITES}
    held: list[tuple[str, int, WindowStats]] = []
    very_late = ("s2", 40, series["s2"][40])  # its bucket is judged long before it arrives
    for p in range(len(series["s1"]) // 3):
        clock[0] = T0 + (p + 1) * 3 * WINDOW_S + 1
        due = [(s, i, w) for s in SITES for i, w in enumerate(series[s]) if 3 * p <= i < 3 * p + 3]
        due = [d for d in due if d[:2] != very_late[:2]]
        arriving = held + due
        held = rng.sample(due, 1)  # one window a pass arrives with the next pass
        if p == 40:
            held.append(very_late)
        for site, i, w in arriving:
            if (site, i, w) in held:
                continue
            store.telemetry.ingest(site, f"b{site}{i}", "sp", (0, 0), [_new(site, i, w)])
            shipped[site].append(w)
        service.refresh()
        if p % 10 == 9 or p == 41:
            found = service.find(since_s=MAX_SINCE_S)
            assert_same_anomalies(_plain(found), _reference(shipped, clock[0]))
    final = _plain(service.find(since_s=MAX_SINCE_S))
    assert {a["metric"] for a in final} >= {"error_rate", "stuck:X[1]", "p99"}
    assert service.open_counts() == {
        site: sum(1 for a in final if a["open"] and a["site"] == site) for site in SITES
    }

    # Retention deletes the oldest windows: the state keeps what it judged from them.
    folded = store.telemetry.compact(datetime.fromtimestamp(T0 + 20 * 60, UTC))
    assert folded > 0
    service.refresh()
    assert_same_anomalies(_plain(service.find(since_s=MAX_SINCE_S)), final)
    assert_same_anomalies(_plain(service.find(since_s=MAX_SINCE_S)), _reference(shipped, clock[0]))
