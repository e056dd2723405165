"""Precision, recall and time to detect of the hub's anomaly detector on injected faults.

    .venv/bin/python bench/anomalies.py [--seeds 5] [--buckets 120] [--rate 3]
        [--strength mild] [--sensitivity 3]

Each run is one site x model: the demo's synthetic plant data (``modelfleet.sim.plant_data``,
plant eu-west) is served at ``--rate`` requests/s (a slow +-20 % daily-like swing) by a
fixed logistic score model, and every request goes through the site's own
``TelemetryRecorder`` (10 s windows, 256 sampled requests, the same sketches a site
ships) on a simulated clock. Latency is log-normal (median 3 ms), 0.2 % of requests fail.

Per seed there is one clean run and one run per fault, injected from bucket
``--fault-at`` (plus 0-50 s, on the 10 s window grid, varying with the seed) for
``--fault-len`` buckets (60 s each):

- ``stuck_sensor`` — input X[1] (air temperature) repeats one value;
- ``error_burst`` — 15 % of requests fail (``--strength mild``: 3 %);
- ``latency_spike`` — latency x5 (mild: x2);
- ``traffic_drop`` — request rate x0.3 (mild: x0.6).

The detector (``modelfleet.monitoring.anomaly.detect``, default settings) reads the windows
once at the end; it is causal (each bucket is judged on earlier ones only), so
``detected_at`` is when an online hub would have raised it. An anomaly is a true positive
when its metric is the fault's (``stuck:X[1]``, ``error_rate``, ``p99``, ``request_rate``)
and it overlaps the fault (plus two buckets); precision per metric counts every anomaly of
that metric in every run. Delay = detected_at - fault onset. Writes
bench/results/anomalies.json (``anomalies_mild.json`` for ``--strength mild``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.monitoring.anomaly import Anomaly, AnomalySettings, WindowStats, detect
from modelfleet.sim.plant_data import PLANTS, generate
from modelfleet.site.telemetry import TelemetryRecorder

ROOT = Path(__file__).resolve().parent
WINDOW_S = 10.0
T0 = 1_800_000_000.0  # a fixed epoch start, on every grid
#: How strong each fault is: ``strong`` (the default) and ``mild``, where detection thins.
STRENGTH = {
    "strong": {"errors": 0.15, "latency": 5.0, "traffic": 0.3},
    "mild": {"errors": 0.03, "latency": 2.0, "traffic": 0.6},
}
FAULTS = {
    "stuck_sensor": "stuck:X[1]",
    "error_burst": "error_rate",
    "latency_spike": "p99",
    "traffic_drop": "request_rate",
}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def simulate(
    fault: str | None, seed: int, *, buckets: int, rate: float, fault_at: int, fault_len: int,
    bucket_s: float, strength: dict[str, float],
) -> tuple[list[WindowStats], tuple[float, float]]:  # fmt: skip
    """Windows of one run and the fault's [onset, end) in epoch seconds."""
    rng = np.random.default_rng(seed * 7919 + len(fault or ""))
    clock = Clock(T0)
    closed: list[dict[str, Any]] = []
    recorder = TelemetryRecorder(closed.append, window_s=WINDOW_S, clock=clock)
    duration = buckets * bucket_s
    # The onset falls anywhere on the 10 s window grid inside its bucket, per seed.
    offset = (seed * 7 % int(bucket_s / WINDOW_S)) * WINDOW_S
    onset = T0 + fault_at * bucket_s + offset
    until = onset + fault_len * bucket_s
    n_max = int(duration * rate * 1.5) + 10
    features, _ = generate(PLANTS["eu-west"], n_max, seed=seed)
    mu, sd = features.mean(axis=0), features.std(axis=0) + 1e-9
    weights = np.array([0.2, 0.8, -0.5, -0.6, 0.9, 0.7])
    row = 0
    stuck_value: float | None = None
    for w in range(int(duration / WINDOW_S)):
        start = T0 + w * WINDOW_S
        in_fault = fault is not None and onset <= start < until
        level = rate * (1 + 0.2 * math.sin(2 * math.pi * start / 86_400.0 * 8))
        if in_fault and fault == "traffic_drop":
            level *= strength["traffic"]
        arrivals = np.sort(rng.uniform(start, start + WINDOW_S, rng.poisson(level * WINDOW_S)))
        for at in arrivals:
            clock.now = float(at)
            x = features[row % n_max : row % n_max + 1].copy()
            row += 1
            if in_fault and fault == "stuck_sensor":
                stuck_value = float(x[0, 1]) if stuck_value is None else stuck_value
                x[0, 1] = stuck_value
            score = 1 / (1 + np.exp(-(((x - mu) / sd) @ weights - 2.0)))
            latency = float(rng.lognormal(math.log(0.003), 0.3))
            if in_fault and fault == "latency_spike":
                latency *= strength["latency"]
            p_error = strength["errors"] if in_fault and fault == "error_burst" else 0.002
            failed = rng.random() < p_error
            recorder.observe(
                model="machine-health",
                version=1,
                latency_s=latency,
                outcome="error" if failed else "ok",
                batch_size=1,
                inputs={"X": x},
                outputs=None if failed else {"score": score.astype(np.float32)},
            )
        clock.now = start + WINDOW_S
        recorder.flush()
    windows = [
        WindowStats(
            start=d["start"],
            end=d["end"],
            version=d["version"],
            requests=d["requests"],
            errors=d["errors"],
            latency=d["latency"],
            inputs=d["inputs"],
            outputs=d["outputs"],
        )
        for d in json.loads(json.dumps(closed))  # exactly what a site would ship
    ]
    return windows, (onset, until)


def _overlaps(a: Anomaly, onset: float, until: float, grace: float, now: float) -> bool:
    end = a.end.timestamp() if a.end is not None else now
    return a.start.timestamp() < until + grace and end >= onset


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = AnomalySettings(**({"sensitivity": args.sensitivity} if args.sensitivity else {}))
    bucket_s = settings.bucket_s
    now = T0 + args.buckets * bucket_s + 60.0
    grace = 2 * bucket_s
    flagged: dict[str, list[bool]] = {m: [] for m in FAULTS.values()}  # metric -> TP flags
    recall: dict[str, list[float | None]] = {f: [] for f in FAULTS}  # delays (None: missed)
    clean_false = 0
    other: dict[str, int] = {}
    started = time.perf_counter()
    for seed in range(args.seeds):
        for fault in (None, *FAULTS):
            windows, (onset, until) = simulate(
                fault, seed, buckets=args.buckets, rate=args.rate, fault_at=args.fault_at,
                fault_len=args.fault_len, bucket_s=bucket_s, strength=STRENGTH[args.strength],
            )  # fmt: skip
            found = detect(windows, settings, site="plant", model="machine-health", now=now)
            expected_metric = FAULTS[fault] if fault else None
            hits: list[Anomaly] = []
            for a in found:
                tp = a.metric == expected_metric and _overlaps(a, onset, until, grace, now)
                if a.metric in flagged:
                    flagged[a.metric].append(tp)
                else:
                    key = f"{a.metric} in {fault or 'clean'} runs"
                    other[key] = other.get(key, 0) + 1
                if tp:
                    hits.append(a)
                if fault is None:
                    clean_false += 1
            if fault is not None:
                first = min((a.detected_at for a in hits), default=None)
                recall[fault].append(None if first is None else first.timestamp() - onset)
            print(
                f"seed {seed} {fault or 'clean':14s} windows {len(windows):4d} anomalies "
                + (", ".join(f"{a.metric}@{a.start:%H:%M}" for a in found) or "-"),
                file=sys.stderr,
            )
    rows = []
    for fault, metric in FAULTS.items():
        delays = [d for d in recall[fault] if d is not None]
        tps = flagged[metric]
        rows.append(
            {
                "fault": fault,
                "metric": metric,
                "injected": len(recall[fault]),
                "detected": len(delays),
                "recall": round(len(delays) / len(recall[fault]), 3),
                "anomalies": len(tps),
                "precision": round(sum(tps) / len(tps), 3) if tps else None,
                "delay_s_median": statistics.median(delays) if delays else None,
                "delay_s_max": max(delays) if delays else None,
                "delay_buckets_median": (
                    round(statistics.median(delays) / bucket_s, 2) if delays else None
                ),
            }
        )
    return {
        "at": datetime.now(UTC).isoformat(),
        "settings": settings.model_dump(),
        "seeds": args.seeds,
        "strength": args.strength,
        "fault_strength": STRENGTH[args.strength],
        "buckets": args.buckets,
        "rate_per_s": args.rate,
        "fault_at_bucket": args.fault_at,
        "fault_buckets": args.fault_len,
        "window_s": WINDOW_S,
        "clean_run_hours": round(args.seeds * args.buckets * bucket_s / 3600, 2),
        "false_anomalies_in_clean_runs": clean_false,
        "other_metrics_flagged": other,
        "results": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--buckets", type=int, default=120, help="60 s buckets per run")
    parser.add_argument("--rate", type=float, default=3.0, help="requests per second")
    parser.add_argument("--fault-at", type=int, default=80)
    parser.add_argument("--fault-len", type=int, default=10)
    parser.add_argument("--strength", choices=sorted(STRENGTH), default="strong")
    parser.add_argument("--sensitivity", type=float, help="the z threshold (default 4)")
    args = parser.parse_args()
    report = run(args)
    print(f"{'fault':15s} {'metric':13s} {'recall':>7s} {'precision':>9s} "
          f"{'delay med s':>11s} {'(buckets)':>9s} {'delay max s':>11s}")  # fmt: skip
    for r in report["results"]:
        print(
            f"{r['fault']:15s} {r['metric']:13s} {r['recall']:7.2f} "
            f"{'-' if r['precision'] is None else format(r['precision'], '.2f'):>9s} "
            f"{'-' if r['delay_s_median'] is None else format(r['delay_s_median'], '.0f'):>11s} "
            f"{'-' if r['delay_buckets_median'] is None else r['delay_buckets_median']:>9} "
            f"{'-' if r['delay_s_max'] is None else format(r['delay_s_max'], '.0f'):>11s}"
        )
    print(
        f"clean runs: {report['false_anomalies_in_clean_runs']} anomalies in "
        f"{report['clean_run_hours']} h; other metrics flagged: {report['other_metrics_flagged']}"
    )
    suffix = "" if args.strength == "strong" else f"_{args.strength}"
    suffix += "" if args.sensitivity is None else f"_z{args.sensitivity:g}"
    out = ROOT / "results" / f"anomalies{suffix}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
