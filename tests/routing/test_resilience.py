"""Failover under load (SIGKILL) and hedging against a site slowed by the WAN emulator."""

from __future__ import annotations

import statistics
import threading
import time

import numpy as np

import modelfleet
from modelfleet.routing import RoutingOptions
from modelfleet.sim.launcher import wait_http
from tests.routing.conftest import GeoFleet

X = np.zeros((1, 4), np.float32)


def test_hedge_to_the_next_site_when_the_chosen_one_slows_down(geo_fleet: GeoFleet) -> None:
    eu = [s for s in geo_fleet.static_sites() if s["name"] in ("eu-a", "eu-b")]
    options = RoutingOptions(hedge_min_samples=10, hedge_budget=1.0)
    with modelfleet.Client(sites=eu, data_region="EU", options=options) as client:
        for _ in range(30):
            chosen = client.infer_detailed("pump", {"X": X}).site
        other = "eu-b" if chosen == "eu-a" else "eu-a"
        slow = geo_fleet.links[chosen]
        aborted_before = slow.stats.aborted
        before = client.router.counters.as_dict()
        slow.set(delay_s=0.3)
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
        deadline = time.monotonic() + 2
        while slow.stats.aborted == aborted_before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert slow.stats.aborted == aborted_before + 1  # ...and its connection closed
        print(f"\nhedged answer in {result.latency_s * 1e3:.1f} ms (slow site: 600 ms RTT)")


def test_sigkill_of_the_chosen_site_under_load_fails_no_request(geo_fleet: GeoFleet) -> None:
    failures: list[str] = []
    samples: list[tuple[float, float, str]] = []  # (finished at, latency, site)
    stop = threading.Event()
    client = modelfleet.Client(
        geo_fleet.hub.url,
        geo_fleet.viewer_token,
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
            samples.append((time.perf_counter(), time.perf_counter() - started, result.site))

    workers = [threading.Thread(target=load) for _ in range(4)]
    try:
        for worker in workers:
            worker.start()
        time.sleep(1.0)
        victim = samples[-1][2]
        killed_at = time.perf_counter()
        geo_fleet.sites[victim].kill()
        time.sleep(1.5)
        stop.set()
        for worker in workers:
            worker.join()
    finally:
        stop.set()
        client.close()
    try:
        assert failures == []
        before = [lat for t, lat, _ in samples if t < killed_at]
        around = [lat for t, lat, _ in samples if killed_at <= t < killed_at + 0.5]
        after = [(lat, site) for t, lat, site in samples if t >= killed_at + 0.5]
        assert {site for _, site in after} == {"eu-b" if victim == "eu-a" else "eu-a"}
        print(
            f"\nfailover: {len(samples)} requests, 0 failed; killed {victim}; "
            f"p50 before {statistics.median(before) * 1e3:.2f} ms, "
            f"worst within 0.5 s of the kill {max(around) * 1e3:.2f} ms, "
            f"p50 after {statistics.median([lat for lat, _ in after]) * 1e3:.2f} ms"
        )
    finally:
        geo_fleet.restart(victim)
        wait_http(f"{geo_fleet.sites[victim].url}/v2/models/pump/ready", 60)
