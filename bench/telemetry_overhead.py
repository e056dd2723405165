"""Hot-path cost of telemetry: the observer alone, and serving throughput with vs without.

    .venv/bin/python bench/telemetry_overhead.py [--seconds 8] [--rounds 2] [--concurrency 32]

Part 1 times ``TelemetryRecorder.observe`` (what the server calls per request) and the
window close (sketching the sampled rows, done off the request path). Part 2 starts a
real hub and one real site twice per round -- telemetry on, then off
(MODELFLEET_SITE_TELEMETRY_ENABLED=false) -- and drives the site's OIP endpoint with
``--concurrency`` concurrent clients for ``--seconds`` each. Prints the figures and
writes bench/results/telemetry_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess
from modelfleet.site.telemetry import TelemetryRecorder

ROOT = Path(__file__).resolve().parent


def micro(calls: int = 200_000) -> dict[str, float]:
    closed: list[dict] = []
    recorder = TelemetryRecorder(closed.append, window_s=3600, sample_requests=256)
    x = np.random.default_rng(1).normal(size=(1, 4)).astype(np.float32)
    inputs, outputs = {"X": x}, {"Y": x + 1}
    started = time.perf_counter()
    for _ in range(calls):
        recorder.observe(
            model="pump", version=1, latency_s=0.001, outcome="ok", batch_size=1,
            inputs=inputs, outputs=outputs,
        )  # fmt: skip
    single = (time.perf_counter() - started) / calls

    def worker(n: int) -> None:
        for _ in range(n):
            recorder.observe(
                model="pump", version=1, latency_s=0.001, outcome="ok", batch_size=1,
                inputs=inputs, outputs=outputs,
            )  # fmt: skip

    threads = [threading.Thread(target=worker, args=(calls // 32,)) for _ in range(32)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    contended = (time.perf_counter() - started) / (calls // 32 * 32)
    started = time.perf_counter()
    recorder.flush()
    close = time.perf_counter() - started
    return {
        "observe_us_1_thread": single * 1e6,
        "observe_us_32_threads": contended * 1e6,
        "window_close_ms_256_sampled": close * 1e3,
    }


async def drive(url: str, seconds: float, concurrency: int, token: str) -> tuple[int, int]:
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    done = errors = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits, headers=headers) as http:

        async def one() -> None:
            nonlocal done, errors
            while time.monotonic() < deadline:
                response = await http.post("/v2/models/pump/infer", json=body)
                if response.status_code == 200:
                    done += 1
                else:
                    errors += 1

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return done, errors


def serve(root: Path, enabled: bool, seconds: float, concurrency: int, tag: str) -> float:
    sys.path.insert(0, str(ROOT.parent))  # the test suite's tiny ONNX model
    from tests.conftest import write_tiny_onnx

    init = init_hub(root / f"hub-{tag}")
    # Plain HTTP on loopback on purpose: this measures what telemetry costs, not TLS
    # (bench/serve.py has the TLS rows).
    hub = HubProcess(root / f"hub-{tag}", tls=False).start()
    site = None
    try:
        with HubClient(hub.url, init.admin_token) as admin:
            admin.push(write_tiny_onnx(root / f"m-{tag}.onnx"), "pump")
            token = admin.create_token(f"bench-{tag}", "infer").token
            created = admin.add_site("bench", {"region": "local"})
            env = {"MODELFLEET_SITE_TELEMETRY_ENABLED": "true" if enabled else "false"}
            site = SiteProcess(
                root / f"site-{tag}", hub.url, created["enrollment_token"], extra_env=env
            ).start()
            admin.assign("bench", "pump:1")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                ready = httpx.get(
                    f"{site.url}/v2/models/pump/ready",
                    timeout=2,
                    headers={"Authorization": f"Bearer {token}"},
                )
                if ready.status_code == 200:
                    break
                time.sleep(0.1)
            asyncio.run(drive(site.url, 1.0, concurrency, token))  # warm-up
            done, errors = asyncio.run(drive(site.url, seconds, concurrency, token))
            if errors:
                print(f"  {errors} errors")
            return done / seconds
    finally:
        if site is not None:
            site.stop()
        hub.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    figures: dict[str, object] = {"micro": micro()}
    for key, value in figures["micro"].items():  # type: ignore[union-attr]
        print(f"{key:32s} {value:10.3f}")
    on: list[float] = []
    off: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for enabled, bucket in ((True, on), (False, off)):
                rps = serve(Path(tmp), enabled, args.seconds, args.concurrency, f"{r}-{enabled}")
                bucket.append(rps)
                print(f"round {r} telemetry {'on ' if enabled else 'off'}: {rps:8.0f} req/s")
    with_t, without_t = statistics.median(on), statistics.median(off)
    cost = (without_t - with_t) / without_t * 100
    figures["serving"] = {
        "concurrency": args.concurrency, "seconds": args.seconds, "rounds": args.rounds,
        "rps_with_telemetry": on, "rps_without_telemetry": off,
        "median_with": with_t, "median_without": without_t, "throughput_cost_pct": cost,
    }  # fmt: skip
    print(f"median req/s with {with_t:.0f}, without {without_t:.0f}: cost {cost:+.1f} %")
    print("command: .venv/bin/python bench/telemetry_overhead.py " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items()))  # fmt: skip
    out = ROOT / "results" / "telemetry_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
