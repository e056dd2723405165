"""Telemetry store contract, on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta

import pytest

from modelfleet.errors import InvalidInput, NotFound
from modelfleet.hub.store import NewVersion, Store, TelemetryRepo
from modelfleet.hub.store.records import NewWindow
from modelfleet.hub.store.repos.telemetry import MAX_TOTAL


def repo(store: Store) -> TelemetryRepo:
    return store.telemetry


def window(wid: str, requests: int, *, minutes_ago: float = 0.0, version: int = 1) -> NewWindow:
    end = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return NewWindow(
        window_id=wid, model="pump", version=version, start_at=end - timedelta(seconds=10),
        end_at=end, requests=requests, errors=1, rows=requests, latency_sum=0.1,
        outcomes={"ok": requests - 1, "error": 1}, latency={"5": requests}, batch_sizes={"0": 1},
        profiles={"inputs": {}, "outputs": {}},
    )  # fmt: skip


def push(store: Store) -> None:
    new = NewVersion(
        model="pump", digest="a" * 64, size=1, io={}, opset=17, framework=None, description="",
        metrics={}, tags={}, training_regions=(), parent_version=None, pushed_by="t",
    )  # fmt: skip
    store.models.create_version(new, lambda n, at: ("{}", "sig"))


def test_ingest_is_idempotent_by_batch_and_window(store: Store) -> None:
    telemetry = repo(store)
    first = telemetry.ingest("s1", "b1", "sp", (0, 0), [window("w1", 5), window("w2", 7)])
    assert (first.duplicate_batch, first.accepted) == (False, 2)
    again = telemetry.ingest("s1", "b1", "sp", (0, 0), [window("w1", 5), window("w2", 7)])
    assert (again.duplicate_batch, again.accepted) == (True, 0)
    # The same window in another batch (e.g. after an outbox reset) is still counted once.
    other = telemetry.ingest("s1", "b2", "sp", (0, 0), [window("w2", 7), window("w3", 1)])
    assert (other.accepted, other.duplicates) == (1, 1)
    # Window ids are per site.
    telemetry.ingest("s2", "b1", "sp", (0, 0), [window("w1", 100)])
    totals = {t.site: (t.requests, t.windows, t.errors) for t in telemetry.totals()}
    assert totals == {"s1": (13, 3, 3), "s2": (100, 1, 1)}


def test_totals_are_capped_live_and_rolled_up_and_a_refused_batch_stores_nothing(
    store: Store,
) -> None:
    telemetry = repo(store)
    half = MAX_TOTAL // 2
    telemetry.ingest("s1", "b1", "sp", (0, 0), [window("w1", half, minutes_ago=120)])
    telemetry.compact(datetime.now(UTC) - timedelta(minutes=60))  # w1 into the roll-ups
    telemetry.ingest("s1", "b2", "sp", (0, 0), [window("w2", half - 10)])
    with pytest.raises(InvalidInput, match="would total more than"):
        telemetry.ingest("s1", "b3", "sp", (3, 9), [window("w3", 5), window("w4", 6)])
    [total] = telemetry.totals()
    assert (total.windows, total.requests) == (2, MAX_TOTAL - 10)
    assert telemetry.drops() == {}
    # The refused batch id was not kept: the same id with what fits is taken, and other
    # sites and versions have their own room.
    assert telemetry.ingest("s1", "b3", "sp", (0, 0), [window("w3", 10)]).accepted == 1
    assert telemetry.ingest("s1", "b4", "sp", (0, 0), [window("w5", 5, version=2)]).accepted == 1
    assert telemetry.ingest("s2", "b1", "sp", (0, 0), [window("w1", 5)]).accepted == 1


def test_concurrent_duplicate_batches_count_once(open_backend) -> None:
    stores = [open_backend() for _ in range(4)]
    barrier = threading.Barrier(4)
    windows = [window(f"w{i}", 2) for i in range(20)]

    def deliver(store: Store) -> None:
        barrier.wait()
        with contextlib.suppress(Exception):  # a loser may see a conflict and would retry
            repo(store).ingest("s1", "same-batch", "sp", (0, 0), windows)

    threads = [threading.Thread(target=deliver, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [t.requests for t in repo(stores[0]).totals()] == [40]


def test_drops_keep_the_largest_cumulative_figure_per_outbox(store: Store) -> None:
    telemetry = repo(store)
    telemetry.ingest("s1", "b1", "spool-a", (3, 30), [])
    telemetry.ingest("s1", "b2", "spool-a", (2, 20), [])  # reordered, older figure
    telemetry.ingest("s1", "b3", "spool-b", (1, 4), [])  # a new outbox after a reset
    assert telemetry.drops() == {"s1": (4, 34)}


def test_windows_since_and_filters(store: Store) -> None:
    telemetry = repo(store)
    telemetry.ingest(
        "s1", "b1", "sp", (0, 0),
        [window("old", 1, minutes_ago=120), window("new", 2), window("v2", 4, version=2)],
    )  # fmt: skip
    recent = telemetry.windows(since=datetime.now(UTC) - timedelta(minutes=5))
    assert sorted(w.requests for w in recent) == [2, 4]
    assert [w.requests for w in telemetry.windows(version=1)] == [1, 2]
    with_profiles = telemetry.windows(site="s1", version=2, with_profiles=True)
    assert with_profiles[0].profiles == {"inputs": {}, "outputs": {}}


def test_windows_after_reads_what_was_stored_since_by_id(store: Store) -> None:
    telemetry = repo(store)
    telemetry.ingest("s1", "b1", "sp", (0, 0), [window("a", 1, minutes_ago=120), window("b", 2)])
    first = telemetry.windows_after(0)
    assert [w.requests for _, w in first] == [1, 2]
    assert first[0][1].profiles == {"inputs": {}, "outputs": {}}
    cursor = first[-1][0]
    assert telemetry.windows_after(cursor) == []
    # A window shipped late (its end long ago) is still new by id.
    telemetry.ingest("s2", "b2", "sp", (0, 0), [window("c", 3, minutes_ago=300), window("d", 4)])
    later = telemetry.windows_after(cursor)
    assert [(w.site, w.requests) for _, w in later] == [("s2", 3), ("s2", 4)]
    assert all(i > cursor for i, _ in later)
    # Paged by limit; ``since`` filters on end; ``also`` asks for ids below the cursor again.
    assert [w.requests for _, w in telemetry.windows_after(0, limit=2)] == [1, 2]
    recent = telemetry.windows_after(0, since=datetime.now(UTC) - timedelta(minutes=5))
    assert [w.requests for _, w in recent] == [2, 4]
    again = telemetry.windows_after(later[-1][0], also=[first[0][0]])
    assert [w.requests for _, w in again] == [1]
    assert [w.requests for _, w in telemetry.windows_after(0, site="s2", model="pump")] == [3, 4]
    assert telemetry.windows_after(0, model="other") == []
    assert telemetry.max_window_id() == later[-1][0]


def test_compaction_keeps_totals_exact_and_drops_old_windows(store: Store) -> None:
    telemetry = repo(store)
    day = 24 * 60
    telemetry.ingest(
        "s1", "b1", "sp", (0, 0),
        [window("a", 3, minutes_ago=40 * day), window("b", 5, minutes_ago=35 * day),
         window("c", 7, minutes_ago=1), window("d", 11, minutes_ago=31 * day, version=2)],
    )  # fmt: skip
    telemetry.ingest("s2", "b1", "sp", (0, 0), [window("a", 13, minutes_ago=32 * day)])
    before = {(t.site, t.version): t for t in telemetry.totals()}
    horizon = datetime.now(UTC) - timedelta(days=30)

    assert telemetry.compact(horizon, chunk=2) == 4  # several chunks
    assert [w.requests for w in telemetry.windows()] == [7]  # only the recent one is kept
    assert {(t.site, t.version): t for t in telemetry.totals()} == before
    assert telemetry.compact(horizon) == 0  # idempotent
    assert {(t.site, t.version): t for t in telemetry.totals()} == before
    # A window that arrives late (a site offline for weeks) is counted once, then folded in.
    late = telemetry.ingest("s1", "b9", "sp", (0, 0), [window("e", 17, minutes_ago=33 * day)])
    assert late.accepted == 1
    assert telemetry.compact(horizon) == 1
    after = {(t.site, t.version): t for t in telemetry.totals()}
    assert after[("s1", 1)].requests == before[("s1", 1)].requests + 17
    assert after[("s1", 1)].windows == before[("s1", 1)].windows + 1
    assert after[("s1", 1)].first_start == before[("s1", 1)].first_start
    assert after[("s1", 1)].last_end == before[("s1", 1)].last_end  # "c" is still the newest
    assert [t.requests for t in telemetry.totals(site="s2")] == [13]


def test_compaction_forgets_batch_ids_past_retention(store: Store, monkeypatch) -> None:
    telemetry = repo(store)
    long_ago = datetime.now(UTC) - timedelta(days=40)
    with monkeypatch.context() as clock:
        clock.setattr(store, "now", lambda: long_ago)
        telemetry.ingest("s1", "old", "sp", (0, 0), [])
    telemetry.ingest("s1", "new", "sp", (0, 0), [])
    telemetry.compact(datetime.now(UTC) - timedelta(days=30))
    assert telemetry.ingest("s1", "old", "sp", (0, 0), []).duplicate_batch is False
    assert telemetry.ingest("s1", "new", "sp", (0, 0), []).duplicate_batch is True


def test_reference_profiles_and_thresholds(store: Store) -> None:
    telemetry = repo(store)
    with pytest.raises(NotFound):
        telemetry.set_reference("pump", 1, {"columns": {}}, "alice")
    push(store)
    telemetry.set_reference("pump", 1, {"columns": {"a": 1}}, "alice")
    telemetry.set_reference("pump", 1, {"columns": {"b": 2}}, "bob")
    assert telemetry.get_reference("pump", 1) == {"columns": {"b": 2}}
    assert telemetry.get_reference("pump", 2) is None
    assert telemetry.get_drift_settings("pump") == {}
    telemetry.set_drift_settings("pump", {"psi": 0.2})
    telemetry.set_drift_settings("pump", {"psi": 0.25, "js": 0.2})
    assert telemetry.get_drift_settings("pump") == {"psi": 0.25, "js": 0.2}


def test_gate_baseline_is_the_latest_comparable_stretch_before_the_step(store: Store) -> None:
    """The relative gate's baseline: the newest windows that began before the step, just
    enough to span the new version's observation and hold the minimum requests."""
    from modelfleet.hub.rollout.sources import TelemetryGateSource
    from modelfleet.monitoring.histograms import LATENCY_BOUNDS

    telemetry = repo(store)
    push(store)
    slow_bucket, fast_bucket = str(len(LATENCY_BOUNDS) - 2), "3"

    def at(wid: str, minutes_ago: float, requests: int, bucket: str) -> NewWindow:
        base = window(wid, requests, minutes_ago=minutes_ago)
        return NewWindow(**{**base.__dict__, "latency": {bucket: requests}})

    telemetry.ingest("s1", "b1", "sp", (0, 0), [
        at("old", 8, 500, slow_bucket),  # a slow spell long before: not comparable
        at("w1", 2.0, 20, fast_bucket),
        at("w2", 1.5, 20, fast_bucket),
        at("w3", 1.0, 20, fast_bucket),
        at("after", -1.0, 999, slow_bucket),  # began after the step: not the baseline
    ])  # fmt: skip
    telemetry.ingest("s2", "b1", "sp", (0, 0), [at("other-site", 1.0, 999, slow_bucket)])
    source = TelemetryGateSource(store)
    before = datetime.now(UTC)

    def baseline(span_s: float, min_requests: int):
        return source.baseline(
            "pump", 1, ["s1"], before, span_s=span_s, min_requests=min_requests, lookback_s=600
        )

    recent = baseline(span_s=30, min_requests=40)
    assert recent.requests == 40  # w3 and w2 only
    assert recent.p99_ms is not None
    assert recent.p99_ms < LATENCY_BOUNDS[4] * 1000
    assert baseline(span_s=30, min_requests=60).requests == 60  # w1 too
    # Not enough in the recent stretch: it reaches back, within the look-back only.
    assert baseline(span_s=30, min_requests=1000).requests == 560
    short = source.baseline("pump", 1, ["s1"], before, span_s=30, min_requests=1000, lookback_s=150)
    assert short.requests == 60
