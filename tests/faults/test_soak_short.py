"""A short soak (``bench/soak.py`` runs the long one): a real hub and three real sites under
inference load while a fixed, seeded sequence of faults is injected; every invariant of
:mod:`modelfleet.sim.soak` must hold. The number of faults is fixed, so what is injected does
not depend on the machine's speed."""

from __future__ import annotations

from pathlib import Path

from modelfleet.sim.soak import SoakConfig, run_soak

#: A site SIGKILLed under load and a site cut off from the hub (one round of the seeded
#: shuffle of these two kinds covers both, see ``modelfleet.sim.soak.schedule``).
KINDS = ("site_kill", "hub_partition")


def test_short_soak_keeps_every_invariant(tmp_path: Path) -> None:
    report = run_soak(SoakConfig(root=tmp_path, faults=2, seed=20, kinds=KINDS))
    print(report)
    assert report["violations"] == []
    assert report["faults"] == {"hub_partition": 1, "site_kill": 1}
    assert report["requests"]["ok"] > 0
    assert report["requests"]["expected_failed"] > 0  # the killed site was asked, and failed
    assert report["requests"]["violating"] == 0
    assert report["telemetry"]["hub"] == report["telemetry"]["ok"]
    assert all(rss <= report["rss_bound_mb"] for rss in report["max_rss_mb"].values())
