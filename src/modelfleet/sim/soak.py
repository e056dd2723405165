"""A soak: steady inference load against a real fleet while random faults are injected, with
four invariants checked throughout (``bench/soak.py`` runs it for minutes, CI for seconds in
``tests/faults/test_soak_short.py``).

Faults (one at a time, at seeded random intervals, see :func:`schedule`):

- ``site_kill`` — SIGKILL a site, restart it a few seconds later;
- ``hub_kill`` — SIGKILL the hub, restart it;
- ``hub_partition`` — black-hole one site's link to the hub, then restore it;
- ``client_partition`` — black-hole the SDK<->site link of one site, then restore it;
- ``rollout`` — push a new version and deploy it with a canary strategy (it then runs on
  while later faults hit the fleet).

Invariants:

(a) a request to a site that stayed up and reachable while it was outstanding succeeds
    (failures while its site was killed or cut off are counted as *expected*); the hub
    being down or cut off from a site must not fail any inference;
(b) after everything heals, the hub's telemetry total per (site, model, version) equals the
    requests that site answered with 200. Two faults would otherwise make this unknowable,
    so the injector drains them first: a site is SIGKILLed only once its load is held and
    the hub has counted all it served (the open telemetry window of a SIGKILLed site is
    lost by design, docs/monitoring.md); a client partition starts with no request in
    flight and ends by resetting the held connections (requests sent into the partition
    are then never served late, after the client gave up on them);
(c) every rollout ends in a defined state (succeeded, failed, aborted, rolled back, or
    paused with a reason), never ``running`` after the heal and a generous deadline;
(d) no process's resident memory goes above ``rss_bound_mb``.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from modelfleet.errors import ModelfleetError
from modelfleet.sim.soak_fleet import (
    BODY,
    MODEL,
    SoakFleet,
    SoakSite,
    read_rss_mb,
    wait_until,
)

__all__ = ["FAULT_KINDS", "RSS_BOUND_MB", "Fault", "SoakConfig", "run_soak", "schedule"]

FAULT_KINDS = ("site_kill", "hub_kill", "hub_partition", "client_partition", "rollout")
#: The default memory bound of every process (invariant d).
RSS_BOUND_MB = 600.0
#: States a rollout may end in; ``paused`` only with a reason (inconclusive, or approval).
DEFINED_STATES = frozenset({"succeeded", "failed", "aborted", "rolled_back", "paused"})


@dataclass(frozen=True)
class Fault:
    """One planned fault: what, where (a site index), how long it lasts, the pause before."""

    kind: str
    site: int
    hold_s: float
    gap_s: float


def schedule(seed: int, kinds: tuple[str, ...], sites: int) -> Iterator[Fault]:
    """An endless sequence of faults, the same for the same seed. Kinds come in rounds, each
    a fresh shuffle of ``kinds``: any ``len(kinds)`` faults from the start cover every kind."""
    rng = random.Random(seed)
    while True:
        round_ = list(kinds)
        rng.shuffle(round_)
        for kind in round_:
            site = rng.randrange(sites)
            yield Fault(kind, site, hold_s=rng.uniform(1.0, 4.0), gap_s=rng.uniform(0.5, 3.0))


@dataclass
class SoakConfig:
    """``faults`` set: exactly that many faults, whatever the machine's speed; otherwise
    faults until ``minutes`` have passed."""

    root: Path
    minutes: float = 5.0
    faults: int | None = None
    seed: int = 1
    kinds: tuple[str, ...] = FAULT_KINDS
    clients_per_site: int = 1
    deadline_s: float = 2.0
    rss_bound_mb: float = RSS_BOUND_MB
    settle_timeout_s: float = 120.0
    #: Rollout strategy (a canary at the first site, then half, then all).
    canary_bake_s: float = 1.0
    canary_deadline_s: float = 60.0


@dataclass
class _Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    expected_failed: int = 0
    violating: int = 0
    violations: list[str] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    max_rss_mb: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def violation(self, text: str) -> None:
        with self.lock:
            if len(self.violations) < 50:
                self.violations.append(text)


def _load(fleet: SoakFleet, site: SoakSite, cfg: SoakConfig, tally: _Tally, stop: Any) -> None:
    """One client thread: requests to ``site`` through its client link, each classified."""
    url = f"{site.client_link.url}/v2/models/{MODEL}/infer"
    http: httpx.Client | None = None
    seen_epoch = -1
    try:
        while not stop.is_set():
            if site.paused.is_set():
                site.idle.set()
                time.sleep(0.02)
                continue
            site.idle.clear()
            epoch, state = site.epoch, site.state
            if epoch != seen_epoch or http is None:
                if http is not None:
                    http.close()  # its pooled connections may be to a dead process
                http = httpx.Client(
                    verify=fleet.verify, headers=fleet.headers, timeout=cfg.deadline_s
                )
                seen_epoch = epoch
            error = ""
            try:
                response = http.post(url, json=BODY)
                if response.status_code == 200:
                    version = int(response.json()["model_version"])
                    with tally.lock:
                        tally.ok[(site.name, MODEL, version)] += 1
                    time.sleep(0.02)
                    continue
                error = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            disturbed = state != "up" or site.state != "up" or site.epoch != epoch
            with tally.lock:
                if disturbed:
                    tally.expected_failed += 1
                else:
                    tally.violating += 1
            if not disturbed:
                tally.violation(f"(a) {site.name} up and reachable, request failed: {error}")
            time.sleep(0.05)
    finally:
        site.idle.set()
        if http is not None:
            http.close()


def _watch_memory(fleet: SoakFleet, cfg: SoakConfig, tally: _Tally, stop: Any) -> None:
    """Invariant (d): every second, each live process's VmRSS against the bound."""
    over: set[str] = set()
    while not stop.wait(1.0):
        for name, pid in fleet.pids().items():
            rss = read_rss_mb(pid)
            if rss is None:
                continue
            with tally.lock:
                tally.max_rss_mb[name] = max(tally.max_rss_mb.get(name, 0.0), rss)
            if rss > cfg.rss_bound_mb and name not in over:
                over.add(name)
                tally.violation(f"(d) {name} at {rss:.0f} MB > {cfg.rss_bound_mb:.0f} MB")


def _hold_load(site: SoakSite) -> None:
    """Hold ``site``'s load and wait until no request to it is in flight."""
    site.idle.clear()
    site.paused.set()
    if not site.idle.wait(60):
        raise ModelfleetError(f"{site.name}: the load did not pause")


def _served(fleet: SoakFleet, tally: _Tally, site: str) -> bool:
    counts = fleet.hub_counts()
    with tally.lock:
        mine = {k: v for k, v in tally.ok.items() if k[0] == site}
    return all(counts.get(k, 0) == v for k, v in mine.items())


def _inject(
    fleet: SoakFleet, fault: Fault, cfg: SoakConfig, tally: _Tally, rollouts: list[str]
) -> None:
    site = fleet.sites[fault.site]
    if fault.kind == "site_kill":
        _hold_load(site)
        try:  # the hub has counted all it served: its open window is empty (see b)
            wait_until(lambda: _served(fleet, tally, site.name), 60, f"{site.name} drained")
        except ModelfleetError as exc:
            tally.notes.append(f"site_kill: {exc}")
        site.change("down")
        site.proc.kill()
        site.paused.clear()
        time.sleep(fault.hold_s)  # the outage itself
        site.proc.start(90)
        fleet.wait_model_ready(site, 90)
        site.change("up")
    elif fault.kind == "hub_kill":
        fleet.hub.kill()
        time.sleep(fault.hold_s)
        fleet.hub.start(90)
    elif fault.kind == "hub_partition":
        site.hub_link.cut("blackhole")
        time.sleep(fault.hold_s)
        site.hub_link.restore()  # held telemetry arrives late: the hub must count it once
    elif fault.kind == "client_partition":
        _hold_load(site)
        site.change("cut")
        site.client_link.cut("blackhole")
        site.paused.clear()
        time.sleep(fault.hold_s)
        site.client_link.cut("reset")  # drop what was held (see b), then heal
        site.client_link.restore()
        fleet.wait_model_ready(site, 90)
        site.change("up")
    elif fault.kind == "rollout":
        for previous in rollouts:  # one rollout at a time: wait for the last to end
            wait_until(_ended(fleet, previous), cfg.settle_timeout_s, f"rollout {previous}")
        strategy = {
            "kind": "canary",
            "canary": fleet.sites[0].name,
            "then": [50, 100],
            "bake_s": cfg.canary_bake_s,
            "progress_deadline_s": cfg.canary_deadline_s,
        }
        gates = {"max_error_rate": 0.05, "min_requests": 5}
        rollouts.append(fleet.deploy_version(float(fleet.versions), strategy, gates))
    else:
        raise ModelfleetError(f"unknown fault kind {fault.kind!r}; use one of {FAULT_KINDS}")
    with tally.lock:
        tally.faults[fault.kind] += 1


def run_soak(cfg: SoakConfig) -> dict[str, Any]:
    """Run one soak and return its report (``violations`` must be empty)."""
    unknown = [k for k in cfg.kinds if k not in FAULT_KINDS]
    if unknown or not cfg.kinds:
        raise ModelfleetError(f"fault kinds {unknown or '(none)'}: use some of {FAULT_KINDS}")
    tally = _Tally()
    rollouts: list[str] = []
    started = time.monotonic()
    with SoakFleet.start(cfg.root) as fleet:
        stop = threading.Event()
        threads = [
            threading.Thread(target=_load, args=(fleet, s, cfg, tally, stop), daemon=True)
            for s in fleet.sites
            for _ in range(cfg.clients_per_site)
        ]
        threads.append(
            threading.Thread(target=_watch_memory, args=(fleet, cfg, tally, stop), daemon=True)
        )
        for t in threads:
            t.start()
        load_started = time.monotonic()
        faults = schedule(cfg.seed, cfg.kinds, len(fleet.sites))
        try:
            injected = 0
            while True:
                if cfg.faults is not None and injected >= cfg.faults:
                    break
                if cfg.faults is None and time.monotonic() - load_started >= cfg.minutes * 60:
                    break
                fault = next(faults)
                time.sleep(fault.gap_s)
                _inject(fleet, fault, cfg, tally, rollouts)
                injected += 1
            # (c): the load keeps running so the rollouts' gates can reach a verdict.
            end_states = _settle_rollouts(fleet, cfg, rollouts, tally)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        load_s = time.monotonic() - load_started
        telemetry = _check_telemetry(fleet, cfg, tally)
        dropped = {s.site: s.dropped for s in fleet.admin.get_telemetry_status().sites}
    return {
        "seed": cfg.seed,
        "duration_s": round(time.monotonic() - started, 1),
        "load_s": round(load_s, 1),
        "faults": dict(sorted(tally.faults.items())),
        "requests": {
            "ok": sum(tally.ok.values()),
            "expected_failed": tally.expected_failed,
            "violating": tally.violating,
        },
        "telemetry": telemetry,
        "telemetry_dropped": dropped,
        "rollouts": end_states,
        "max_rss_mb": {k: round(v, 1) for k, v in sorted(tally.max_rss_mb.items())},
        "rss_bound_mb": cfg.rss_bound_mb,
        "violations": tally.violations,
        "notes": tally.notes,
    }


def _ended(fleet: SoakFleet, rollout_id: str) -> Callable[[], bool]:
    return lambda: fleet.admin.get_rollout(rollout_id).state in DEFINED_STATES


def _settle_rollouts(
    fleet: SoakFleet, cfg: SoakConfig, rollouts: list[str], tally: _Tally
) -> list[dict[str, Any]]:
    """Invariant (c): each rollout in a defined state within ``settle_timeout_s``."""
    ends: list[dict[str, Any]] = []
    for rollout_id in rollouts:
        with contextlib.suppress(ModelfleetError):
            wait_until(_ended(fleet, rollout_id), cfg.settle_timeout_s, f"rollout {rollout_id}")
        r = fleet.admin.get_rollout(rollout_id)
        ends.append({"id": r.id, "to_version": r.to_version, "state": r.state, "reason": r.reason})
        if r.state not in DEFINED_STATES or (r.state == "paused" and not r.reason):
            tally.violation(f"(c) rollout {r.id} ended {r.state!r} ({r.reason})")
    return ends


def _check_telemetry(fleet: SoakFleet, cfg: SoakConfig, tally: _Tally) -> dict[str, Any]:
    """Invariant (b): after the heal the hub's totals equal the requests answered."""
    expected = dict(tally.ok)

    def exact() -> bool:
        counts = fleet.hub_counts()
        return all(counts.get(k, 0) == v for k, v in expected.items())

    with contextlib.suppress(ModelfleetError):
        wait_until(exact, cfg.settle_timeout_s, "the hub's telemetry totals")
    counts = fleet.hub_counts()
    rows = []
    for key in sorted(set(expected) | set(counts)):
        sent, counted = expected.get(key, 0), counts.get(key, 0)
        rows.append({"site": key[0], "model": key[1], "version": key[2], "ok": sent,
                     "hub": counted})  # fmt: skip
        if sent != counted:
            tally.violation(f"(b) {key}: {sent} answered, the hub counted {counted}")
    return {"ok": sum(expected.values()), "hub": sum(counts.values()), "rows": rows}
