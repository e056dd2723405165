"""The dashboard's fleet page with 1,000 sites: server time and the browser's load event.

    .venv/bin/python bench/dashboard_fleet.py [--sites 1000] [--reporting 100] [--requests 20]

Starts a real hub process, registers ``--sites`` sites through the API (``POST
/api/v1/sites``, labels varied over 8 regions, 3 providers, 2 tiers), assigns a model to
``--reporting`` of them, and makes those act as a site would through the same API: enroll
with the one-time token, heartbeat (``/report``: the model active) and ship a minute of
10 s telemetry windows (``/telemetry``: requests, errors, latency histogram; no sketches,
so no drift verdict to compute). The rest stay registered but never enrolled (offline).

Then, signed in with a session cookie as a browser is, it times ``GET /ui/fleet`` (first
page, the grouped view, a selector) ``--requests`` times each with httpx on loopback (the
elapsed time of the whole request: server time plus a loopback round trip) and, for
comparison, ``GET /api/v1/telemetry/status`` (every site's row at once); and loads the first
page in headless Chromium 5 times (``performance.timing.loadEventEnd - navigationStart``).
Prints a table and writes bench/results/dashboard_fleet.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from modelfleet.hub.bootstrap import init_hub  # noqa: E402
from modelfleet.hub_client import HubClient  # noqa: E402
from modelfleet.monitoring.profiles import DatasetProfile  # noqa: E402
from modelfleet.sim.launcher import HubProcess  # noqa: E402

CHROMIUM = os.environ.get("MODELFLEET_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [  # as tests/dashboard/conftest.py
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
REGIONS = {
    "eu-west": "EU",
    "eu-central": "EU",
    "uk-south": "UK",
    "us-east": "US",
    "us-west": "US",
    "ap-south": "IN",
    "ap-east": "SG",
    "sa-east": "BR",
}
PROVIDERS = ("aws", "gcp", "azure")
PAGES = {
    "first page": "/ui/fleet",
    "grouped by region": "/ui/fleet?group=region",
    "selector": "/ui/fleet?selector=jurisdiction+in+%28EU%2CUK%29%2Ctier%3Dedge",
    "status API (all rows)": "/api/v1/telemetry/status",
}


def tiny_onnx(path: Path) -> Path:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])
    const = helper.make_tensor("offset", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "offset"], ["Y"])], "tiny", [x], [y], initializer=[const]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def labels_of(i: int) -> dict[str, str]:
    region = list(REGIONS)[i % len(REGIONS)]
    return {
        "region": region,
        "jurisdiction": REGIONS[region],
        "provider": PROVIDERS[i % len(PROVIDERS)],
        "tier": "edge" if i % 4 else "core",
        "plant": f"p{i // 10:03d}",
    }


def sketch(shift: float, rows: int = 200, seed: int = 0) -> dict[str, Any]:
    """The input sketches of one window (or, unshifted and larger, the reference)."""
    profile = DatasetProfile()
    data = np.random.default_rng(seed).normal(shift, 1.0, size=(rows, 4)).astype(np.float32)
    profile.update_tensor("X", data)
    return profile.to_dict()


def windows(model: str, i: int, now: float, shift: float | None) -> list[dict[str, Any]]:
    """Six 10 s windows ending now: ~20 req/s, a few errors, latencies in the ms buckets,
    and (``shift`` not None) each window's input sketches of 200 fresh rows with that mean,
    as a site's telemetry ships them."""
    out = []
    for k in range(6):
        end = now - 10 * k
        requests = 180 + (i * 7 + k) % 60
        out.append(
            {
                "id": f"s{i}w{k}",
                "model": model,
                "version": 1,
                "start": end - 10,
                "end": end,
                "requests": requests,
                "errors": (i + k) % 3,
                "outcomes": {"ok": requests},
                "latency": {"4": requests // 2, "6": requests // 3, "9": requests // 6},
                "latency_sum": requests * 0.004,
                **(
                    {"inputs": sketch(shift, seed=1000 + 6 * i + k)["columns"]}
                    if shift is not None
                    else {}
                ),
            }
        )
    return out


def shift(n: int) -> float:
    """One reporting site in five drifted: its inputs' mean moved by 1.5 sd."""
    return 1.5 if n % 5 == 0 else 0.0


def seed(
    hub: HubProcess, admin_token: str, sites: int, reporting: int, root: Path, sketches: bool
) -> None:
    admin = HubClient(hub.url, admin_token)
    admin.push(tiny_onnx(root / "pump.onnx"), "pump", training_regions=["global"])
    if sketches:  # a reference, so every reporting site's drift is compared
        admin.set_reference_profile("pump", 1, sketch(0.0, rows=5000, seed=1))
    enrollment: dict[str, str] = {}
    started = time.perf_counter()
    for i in range(sites):
        name = f"site-{i:04d}"
        enrollment[name] = admin.add_site(name, labels_of(i))["enrollment_token"]
    print(f"registered {sites} sites in {time.perf_counter() - started:.1f} s", flush=True)
    step = max(1, sites // max(1, reporting))
    chosen = [f"site-{i:04d}" for i in range(0, sites, step)][:reporting]
    now = time.time()
    with httpx.Client(base_url=hub.url, timeout=30) as http:
        for n, name in enumerate(chosen):
            admin.assign(name, "pump:1")
            token = http.post("/api/v1/enroll", json={"token": enrollment[name]}).json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            state = "failed" if n % 25 == 7 else "ready"
            model: dict[str, Any] = {"name": "pump", "desired_version": 1, "state": state}
            if state == "ready":
                model["active_version"] = 1
            else:
                model["error"] = {"code": "load_failed", "message": "out of memory loading"}
            http.post(
                f"/api/v1/sites/{name}/report",
                json={"agent_version": "bench", "uptime_s": 60, "models": [model]},
                headers=auth,
            ).raise_for_status()
            http.post(
                f"/api/v1/sites/{name}/telemetry",
                json={
                    "batch_id": f"b{n}",
                    "spool_id": "bench",
                    "windows": windows("pump", n, now, shift(n) if sketches else None),
                },
                headers=auth,
            ).raise_for_status()
    admin.close()
    print(f"{len(chosen)} sites enrolled, reported and shipped telemetry", flush=True)


def sign_in(hub: HubProcess, token: str) -> httpx.Client:
    http = httpx.Client(base_url=hub.url, timeout=60)
    answer = http.post(
        "/ui/login", data={"token": token, "next": "/ui/fleet"}, headers={"Origin": hub.url}
    )
    if answer.status_code != 303 or "mf_session" not in http.cookies:
        sys.exit(f"sign-in failed: {answer.status_code} {answer.text[:200]}")
    return http


def time_pages(http: httpx.Client, requests: int) -> dict[str, dict[str, float]]:
    figures = {}
    for label, path in PAGES.items():
        http.get(path).raise_for_status()  # warm: caches, templates
        samples = []
        for _ in range(requests):
            started = time.perf_counter()
            response = http.get(path)
            samples.append(time.perf_counter() - started)
            response.raise_for_status()
        samples.sort()
        figures[label] = {
            "path": path,
            "p50_s": round(statistics.median(samples), 4),
            # Nearest rank: with 20 samples, the 19th.
            "p95_s": round(samples[max(0, math.ceil(0.95 * len(samples)) - 1)], 4),
            "max_s": round(samples[-1], 4),
            "bytes": len(response.content),
        }
        print(f"  {label}: p50 {figures[label]['p50_s'] * 1000:.0f} ms", flush=True)
    return figures


def browser_load(hub: HubProcess, token: str, loads: int = 5) -> list[float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(ignore_https_errors=True)
        page = context.new_page()
        page.goto(f"{hub.url}/ui/login?next=/ui/fleet")
        page.fill("#token", token)
        page.click("form.login button[type=submit]")
        page.wait_for_url("**/ui/fleet*")
        samples = []
        for _ in range(loads):
            page.goto(f"{hub.url}/ui/fleet", wait_until="load")
            page.wait_for_function("performance.timing.loadEventEnd > 0")
            samples.append(
                page.evaluate(
                    "performance.timing.loadEventEnd - performance.timing.navigationStart"
                )
                / 1000
            )
        browser.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--reporting", type=int, default=100)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument(
        "--no-sketches", action="store_true", help="windows without input sketches (no drift)"
    )
    args = parser.parse_args()
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        init = init_hub(root / "hub")
        hub = HubProcess(root / "hub").start()
        os.environ["MODELFLEET_CA_FILE"] = str(hub.ca_file)
        os.environ["SSL_CERT_FILE"] = str(hub.ca_file)
        try:
            seed(hub, init.admin_token, args.sites, args.reporting, root, not args.no_sketches)
            http = sign_in(hub, init.admin_token)
            try:
                summary = http.get("/api/v1/fleet").json()["summary"]
                print(f"summary: {summary}", flush=True)
                served = time_pages(http, args.requests)
            finally:
                http.close()
            loads = browser_load(hub, init.admin_token)
        finally:
            hub.stop()
    result = {
        "sites": args.sites,
        "reporting": args.reporting,
        "requests_per_page": args.requests,
        "sketches": not args.no_sketches,
        "summary": summary,
        "server": served,
        "browser_load_s": {"samples": [round(s, 3) for s in loads], "median": 0.0},
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
    }
    result["browser_load_s"]["median"] = round(statistics.median(loads), 3)
    print(f"\n{args.sites} sites ({args.reporting} reporting with telemetry), 50 a page")
    print(f"{'GET':<28}{'p50':>10}{'p95':>10}{'bytes':>10}")
    for label, row in served.items():
        p50, p95 = row["p50_s"] * 1000, row["p95_s"] * 1000
        print(f"{label:<28}{p50:>8.0f}ms{p95:>8.0f}ms{row['bytes']:>10}")
    print(f"browser load event (median of {len(loads)}): {result['browser_load_s']['median']} s")
    out = ROOT / "bench" / "results" / "dashboard_fleet.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
