"""The hub's anomaly service at fleet scale: 1,000 site x model series in a real store.

    .venv/bin/python bench/anomalies_scale.py [--series 1000] [--hours 2] [--db PATH]

Seeds a SQLite file (and a PostgreSQL schema too when ``MODELFLEET_TEST_POSTGRES_URL`` is
set) with ``--series`` site x model series of 60 s windows over ``--hours`` hours, each
window made by the site's own ``TelemetryRecorder`` (3 requests/s, 6 numeric inputs and a
score output, the KLL sketches a site ships). Making a sketch is the bench's slow part, so
a pool of windows is recorded once (``--pool`` distinct series) and every series takes the
pool's windows of one of them, its request and error counts varied: every stored window is
a full-size real one; one series in ten ends in an error burst (30 % of requests failing
over its last 8 minutes), so listings have anomalies to answer. Then times, on
``modelfleet.hub.anomalies.Anomalies`` over that store:

- the first full pass (reads every window of the last two hours, parses each once);
- an incremental pass after one new window per series (every series' next bucket settles
  in it, so it parses 1,000 windows and judges 1,000 buckets: the loop's busiest pass);
- an incremental pass with nothing new (the loop's usual pass between buckets);
- ``find()`` (all, and one site) and ``open_counts()``, answered from the last pass;
- for scale, the from-scratch ``detect()`` of ten series (what each pass cost before).

Prints a table and writes bench/results/anomalies_scale.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.hub.anomalies import Anomalies, _stats
from modelfleet.hub.store import open_sql_store
from modelfleet.hub.store.records import NewWindow
from modelfleet.monitoring.anomaly import AnomalySettings, detect
from modelfleet.site.telemetry import TelemetryRecorder

WINDOW_S = 60.0
RATE = 3.0


def record_pool(n: int, windows: int, t0: float) -> list[list[dict[str, Any]]]:
    """``n`` series of ``windows`` closed 60 s windows from the site's recorder."""
    pool = []
    for k in range(n):
        rng = np.random.default_rng(k)
        now = [t0]
        closed: list[dict[str, Any]] = []
        recorder = TelemetryRecorder(closed.append, window_s=WINDOW_S, clock=lambda now=now: now[0])
        mu = rng.normal(0, 1, size=6)
        for w in range(windows):
            start = t0 + w * WINDOW_S
            for at in np.sort(rng.uniform(start, start + WINDOW_S, rng.poisson(RATE * WINDOW_S))):
                now[0] = float(at)
                x = rng.normal(mu, 1.0, size=(1, 6)).astype(np.float32)
                failed = rng.random() < 0.002
                recorder.observe(
                    model="pump", version=1, latency_s=float(rng.lognormal(math.log(0.003), 0.3)),
                    outcome="error" if failed else "ok", batch_size=1, inputs={"X": x},
                    outputs=None if failed else {"score": 1 / (1 + np.exp(-x.sum(axis=1)))},
                )  # fmt: skip
            now[0] = start + WINDOW_S
            recorder.flush()
        pool.append(json.loads(json.dumps(closed)))  # exactly what a site would ship
    return pool


def new_window(doc: dict[str, Any], shift: float, extra: int, burst: bool = False) -> NewWindow:
    requests = int(doc["requests"]) + extra
    errors = int(requests * 0.3) if burst else int(doc["errors"])
    doc = {**doc, "errors": errors}
    return NewWindow(
        window_id=uuid.uuid4().hex, model=doc["model"], version=int(doc["version"]),
        start_at=datetime.fromtimestamp(doc["start"] + shift, UTC),
        end_at=datetime.fromtimestamp(doc["end"] + shift, UTC), requests=requests,
        errors=int(doc["errors"]), rows=requests, latency_sum=0.0,
        outcomes={"ok": requests - int(doc["errors"]), "error": int(doc["errors"])},
        latency=dict(doc["latency"]), batch_sizes={},
        profiles={"inputs": doc["inputs"], "outputs": doc["outputs"]},
    )  # fmt: skip


def timed(fn: Any, repeat: int = 1) -> float:
    best = math.inf
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
    return best


def run(url: str, args: argparse.Namespace, pool: list[list[dict[str, Any]]], t0: float) -> dict:
    store = open_sql_store(url)
    per = int(args.hours * 3600 / WINDOW_S)
    began = time.perf_counter()
    for s in range(args.series):
        docs = pool[s % len(pool)][:per]
        burst = s % 10 == 0  # one series in ten: 30 % errors over its last 8 minutes
        batch = [
            new_window(d, 0.0, (s * 7 + i) % 5, burst and i >= per - 8) for i, d in enumerate(docs)
        ]
        store.telemetry.ingest(f"site-{s:04d}", uuid.uuid4().hex, "sp", (0, 0), batch)
    seed_s = time.perf_counter() - began
    clock = [t0 + per * WINDOW_S + 20]  # the last bucket has just settled
    service = Anomalies(store.telemetry, clock=lambda: clock[0])
    first = timed(service.refresh)
    # One new window per series; the clock moves one bucket so each series judges it.
    for s in range(args.series):
        doc = pool[s % len(pool)][per]
        store.telemetry.ingest(
            f"site-{s:04d}", uuid.uuid4().hex, "sp", (0, 0), [new_window(doc, 0.0, s % 3)]
        )
    clock[0] += WINDOW_S
    incremental = timed(service.refresh)
    idle = timed(service.refresh, repeat=3)
    find_all = timed(lambda: service.find(), repeat=20)
    find_site = timed(lambda: service.find(site="site-0500"), repeat=20)
    counts = timed(service.open_counts, repeat=20)
    found = service.find(since_s=7 * 86400)
    sample = store.telemetry.windows(site="site-0000", model="pump", with_profiles=True)
    scratch = timed(
        lambda: [
            detect(
                [_stats(w) for w in sample], AnomalySettings(), site="x", model="pump", now=clock[0]
            )
            for _ in range(10)
        ]
    )
    store.close()
    return {
        "windows": args.series * (per + 1),
        "seed_s": round(seed_s, 1),
        "first_pass_s": round(first, 3),
        "incremental_pass_s": round(incremental, 3),
        "idle_pass_s": round(idle, 4),
        "find_all_ms": round(find_all * 1000, 3),
        "find_site_ms": round(find_site * 1000, 3),
        "open_counts_ms": round(counts * 1000, 3),
        "anomalies": len(found),
        "from_scratch_per_series_s": round(scratch / 10, 4),
        "from_scratch_fleet_s_estimate": round(scratch / 10 * args.series, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--pool", type=int, default=4)
    parser.add_argument("--db", type=Path, default=None, help="SQLite file (default: a temp)")
    args = parser.parse_args()
    t0 = math.floor(time.time() / 3600) * 3600 - 3 * 3600
    per = int(args.hours * 3600 / WINDOW_S)
    began = time.perf_counter()
    pool = record_pool(args.pool, per + 1, t0)
    print(
        f"recorded a pool of {args.pool} x {per + 1} windows in {time.perf_counter() - began:.0f} s"
    )
    sizes = [len(json.dumps(d)) for d in pool[0]]
    backends: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "hub.db"
        backends["sqlite"] = f"sqlite:///{db}"
        pg = os.environ.get("MODELFLEET_TEST_POSTGRES_URL")
        if pg:
            backends["postgresql"] = pg
        results = {}
        for name, url in backends.items():
            if name == "postgresql":
                url = _fresh_schema(url)
            try:
                results[name] = run(url, args, pool, t0)
                print(name, json.dumps(results[name]), flush=True)
            finally:
                if name == "postgresql":
                    _drop_schema(pg or "", url)
    rows = [
        ("first full pass (s)", "first_pass_s"),
        ("incremental pass, 1 new window/series (s)", "incremental_pass_s"),
        ("incremental pass, nothing new (s)", "idle_pass_s"),
        ("find() all (ms)", "find_all_ms"),
        ("find(site=...) (ms)", "find_site_ms"),
        ("open_counts() (ms)", "open_counts_ms"),
        ("from scratch, per series (s)", "from_scratch_per_series_s"),
        ("from scratch, whole fleet (s, est.)", "from_scratch_fleet_s_estimate"),
        ("windows stored", "windows"),
        ("anomalies found", "anomalies"),
    ]
    names = list(results)
    print(f"{args.series} series x {args.hours:g} h of 60 s windows "
          f"(window JSON median {statistics.median(sizes)} bytes)")  # fmt: skip
    print(f"{'':45}" + "".join(f"{n:>12}" for n in names))
    for label, key in rows:
        print(f"{label:45}" + "".join(f"{results[n][key]:>12}" for n in names))
    out = Path(__file__).parent / "results" / "anomalies_scale.json"
    out.write_text(
        json.dumps(
            {
                "series": args.series,
                "hours": args.hours,
                "pool": args.pool,
                "window_json_bytes_median": statistics.median(sizes),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


def _fresh_schema(base: str) -> str:
    import psycopg
    from sqlalchemy.engine import make_url

    libpq = make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


def _drop_schema(base: str, url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    schema = str(make_url(url).query["options"]).removeprefix("-csearch_path=")
    libpq = make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
