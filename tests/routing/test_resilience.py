"""Failover under load (SIGKILL) and hedging against a site slowed by the WAN emulator."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import modelfleet
from modelfleet.routing import RoutingOptions
from modelfleet.sim.launcher import wait_http
from tests.routing.conftest import GeoFleet

X = np.zeros((1, 4), np.float32)
#: One-way delay of the slowed site: its round trip (6 s) is far beyond what the hedge to a
#: healthy site takes even on a busy machine, and within the 10 s request deadline.
SLOW_DELAY_S = 3.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)


@dataclass(frozen=True)
class Sample:
    started: float
    finished: float
    site: str


def test_hedge_to_the_next_site_when_the_chosen_one_slows_down(geo_fleet: GeoFleet) -> None:
    eu = [s for s in geo_fleet.static_sites() if s["name"] in ("eu-a", "eu-b")]
    options = RoutingOptions(hedge_min_samples=10, hedge_budget=1.0)
    with modelfleet.Client(
        sites=eu, token=geo_fleet.infer_token, data_region="EU", options=options
    ) as client:
        for _ in range(30):
            chosen = client.infer_detailed("pump", {"X": X}).site
        other = "eu-b" if chosen == "eu-a" else "eu-a"
        slow = geo_fleet.links[chosen]
        aborted_before = slow.stats.aborted
        before = client.router.counters.as_dict()
        slow.set(delay_s=SLOW_DELAY_S)
        try:
            result = client.infer_detailed("pump", {"X": X})
            after = client.router.counters.as_dict()
        finally:
            slow.set(delay_s=0.0)
        assert result.hedged is True
        assert result.site == other  # exactly one answer, from the hedge
        assert result.attempts == 2
        assert after["hedges"] - before["hedges"] == 1
        assert after["hedges_won"] - before["hedges_won"] == 1
        assert after["cancelled"] - before["cancelled"] == 1  # the loser was cancelled...
        wait_until(lambda: slow.stats.aborted != aborted_before, "the loser's connection closed")
        assert slow.stats.aborted == aborted_before + 1  # ...and its connection closed
        print(
            f"\nhedged answer in {result.latency_s * 1e3:.1f} ms "
            f"(slow site: {2 * SLOW_DELAY_S:.0f} s RTT)"
        )


def test_sigkill_of_the_chosen_site_under_load_fails_no_request(geo_fleet: GeoFleet) -> None:
    failures: list[str] = []
    samples: list[Sample] = []
    stop = threading.Event()
    client = modelfleet.Client(
        geo_fleet.hub.url,
        geo_fleet.infer_token,
        data_region="EU",
        cache_path=geo_fleet.root / "failover-cache.json",
    )

    def load() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                result = client.infer_detailed("pump", {"X": X}, deadline_s=5)
            except Exception as exc:  # counted, never expected
                failures.append(repr(exc))
                continue
            samples.append(Sample(started, time.perf_counter(), result.site))

    workers = [threading.Thread(target=load) for _ in range(4)]
    victim = ""
    try:
        for worker in workers:
            worker.start()
        # Load is flowing (counted, not assumed from a sleep), then the chosen site dies.
        wait_until(lambda: len(samples) >= 20, "20 answers before the kill")
        victim = samples[-1].site
        killed_at = time.perf_counter()
        geo_fleet.sites[victim].kill()
        dead_at = time.perf_counter()  # reaped: from here on it cannot answer anything
        wait_until(
            lambda: sum(s.started >= dead_at for s in samples) >= 20, "20 answers after the kill"
        )
        stop.set()
        for worker in workers:
            worker.join()
    finally:
        stop.set()
        client.close()
    try:
        assert failures == []
        survivor = "eu-b" if victim == "eu-a" else "eu-a"
        after = [s for s in samples if s.started >= dead_at]
        assert len(after) >= 20
        assert {s.site for s in after} == {survivor}
        across = [s for s in samples if s.started < killed_at < s.finished]
        before = [s.finished - s.started for s in samples if s.finished < killed_at]
        print(
            f"\nfailover: {len(samples)} requests, 0 failed; killed {victim}; "
            f"{len(across)} in flight across the kill, the slowest "
            f"{max((s.finished - s.started for s in across), default=0.0) * 1e3:.2f} ms; "
            f"p50 before {statistics.median(before) * 1e3:.2f} ms, "
            f"p50 after {statistics.median(s.finished - s.started for s in after) * 1e3:.2f} ms"
        )
    finally:
        if victim:
            geo_fleet.restart(victim)
            site = geo_fleet.sites[victim]
            wait_http(
                f"{site.url}/v2/models/pump/ready", 60, site.proc, token=geo_fleet.infer_token
            )
