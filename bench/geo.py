"""Local vs central inference latency across three regions, with WAN links emulated.

Fleet (real processes on loopback): a hub; a *central* site; one *local* site per region
(eu, us, in); a second EU site (*eu-backup*) for failover. Every client-to-site path goes
through its own ``modelfleet sim wan`` process (a user-space TCP proxy, see
``modelfleet/sim/wan.py``):

- centralized: clients in eu / us / in reach the central site over 30 / 80 / 150 ms one way
  (60 / 160 / 300 ms round trip; a new connection pays one more round trip for the handshake);
- multi-site: each region reaches its local site over 0.5 ms one way (~1 ms round trip);
  eu clients also see eu-backup at 10 ms one way.

Scenarios, all with the same request (a [1, 4] FP32 tensor to a small ONNX model), the same
concurrency (``--workers`` threads per region) and the same request count:

(a) central: a plain keep-alive HTTP client posts OIP JSON straight to the central site;
(b) local via the SDK: ``modelfleet.Client(sites=..., data_region=REGION)``;
(c) local via the gateway: a ``modelfleet gateway serve`` per region (on the client's host),
    the same plain client posting to it.

Also measured: SDK and gateway overhead over a direct call to a site on loopback with no WAN
link (sequential, interleaved), and failover: eu under load, eu-local SIGKILLed, through the
SDK and through the gateway (failed requests, worst latency, p50 before and after).

TLS, as a fleet runs: the hub serves HTTPS with its fleet CA, every site HTTPS with the
certificate it got at enrollment; the WAN links relay TCP, so TLS runs end to end through
them. The plain client and the SDK verify the sites against the fleet CA (the SDK also that
the certificate names the site it chose); the gateways are given the CA as their trusted
roots (``SSL_CERT_FILE``). Connections are kept alive, so a handshake (one more WAN round
trip with TLS 1.3) happens once per connection, outside the measured requests.
``--insecure-http`` runs the same fleet on plain HTTP, to compare. ``--token T`` sends
``Authorization: Bearer T`` with every inference (sites may require an ``infer`` token).

Run: ``.venv/bin/python bench/geo.py`` (about a minute). Prints a table, writes
``bench/results/geo.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "geo.json"
sys.path.insert(0, str(ROOT / "src"))

import modelfleet  # noqa: E402
from modelfleet.hub.bootstrap import init_hub  # noqa: E402
from modelfleet.hub_client import HubClient  # noqa: E402
from modelfleet.sim.launcher import (  # noqa: E402
    GatewayProcess,
    HubProcess,
    PortReservation,
    SiteProcess,
    issue_gateway_certificate,
    reserve_port,
    wait_http,
)

REGIONS = {"eu": ("EU", 0.030), "us": ("US", 0.080), "in": ("IN", 0.150)}
LOCAL_DELAY_S = 0.0005
BACKUP_DELAY_S = 0.010
MODEL = "sensor"
X = np.arange(4, dtype=np.float32).reshape(1, 4)
JSON_BODY = json.dumps(
    {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": X.ravel().tolist()}]}
).encode()


def write_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])
    const = helper.make_tensor("w", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["X", "w"], ["Y"])], "sensor", [x], [y], initializer=[const]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


class Procs:
    """Child processes, stopped in reverse order on exit."""

    def __init__(self) -> None:
        self.items: list[subprocess.Popen[bytes]] = []
        self.gateways: list[GatewayProcess] = []
        self.ports: list[PortReservation] = []

    def add(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.items.append(proc)
        return proc

    def reserve(self) -> int:
        """A port held until close(), for a child to listen on (see sim/launcher.py)."""
        self.ports.append(reserve_port())
        return self.ports[-1].port

    def close(self) -> None:
        for gw in reversed(self.gateways):
            gw.stop()
        for proc in reversed(self.items):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for reservation in self.ports:
            reservation.close()


#: ``https`` unless run with ``--insecure-http``; set by ``main``.
SCHEME = "https"
#: The fleet CA the clients verify sites with (None on plain HTTP); set by ``run``.
CA_FILE: Path | None = None
#: Sent with every inference request (``--token``), by the plain client and the SDK.
HEADERS: dict[str, str] = {}
TOKEN: str | None = None
#: The hub's data directory (its fleet CA signs the gateways' certificates); set by ``run``.
HUB_DIR: Path | None = None


def wan(procs: Procs, upstream_port: int, delay_s: float) -> str:
    port = procs.reserve()
    cmd = [
        sys.executable, "-m", "modelfleet", "sim", "wan",
        "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream_port}",
        "--delay", f"{delay_s * 1e3}ms",
    ]  # fmt: skip
    procs.add(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return f"{SCHEME}://127.0.0.1:{port}"


def gateway(procs: Procs, root: Path, name: str, sites: list[dict[str, Any]], region: str) -> str:
    sites_file = root / f"gateway-{name}.json"
    sites_file.write_text(json.dumps(sites))
    args = ["--sites", str(sites_file), "--data-region", region]
    if CA_FILE is not None and HUB_DIR is not None:
        # HTTPS with a fleet certificate; it verifies the sites against the fleet CA.
        tls_dir = issue_gateway_certificate(HUB_DIR, root / f"gateway-{name}-tls", name=name)
        gw = GatewayProcess(args, tls_dir=tls_dir)
    else:
        gw = GatewayProcess(args, insecure_http=True)
    procs.gateways.append(gw)
    return gw.start().url


class Plain:
    """The lightest direct client: stdlib keep-alive HTTP, OIP JSON."""

    def __init__(self, url: str) -> None:
        scheme, _, hostport = url.partition("://")
        host, port = hostport.split(":")
        if scheme == "https":
            context = ssl.create_default_context(cafile=str(CA_FILE) if CA_FILE else None)
            self.conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, int(port), timeout=30, context=context
            )
        else:
            self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def infer(self, headers: dict[str, str] | None = None) -> None:
        try:
            self._infer(headers)
        except (http.client.RemoteDisconnected, ConnectionError):
            self.conn.close()  # the server closed an idle connection: reconnect once
            self._infer(headers)

    def _infer(self, headers: dict[str, str] | None) -> None:
        self.conn.request(
            "POST",
            f"/v2/models/{MODEL}/infer",
            JSON_BODY,
            {"content-type": "application/json", **HEADERS, **(headers or {})},
        )
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")

    def close(self) -> None:
        self.conn.close()


#: Connections handed back by finished workers, re-pooled by ``run``.
RETURNED: list[tuple[str, Plain]] = []


def drive(
    make_call: Callable[[], Callable[[], None]], requests: int, workers: int
) -> dict[str, Any]:
    """``requests`` calls spread over ``workers`` threads; latency percentiles and failures."""
    latencies: list[float] = []
    failures: list[str] = []
    per_worker = requests // workers

    def worker() -> None:
        call = make_call()
        for _ in range(per_worker):
            started = time.perf_counter()
            try:
                call()
            except Exception as exc:
                failures.append(repr(exc))
                continue
            latencies.append(time.perf_counter() - started)
        for url, plain in threading.current_thread().__dict__.get("_back", []):
            RETURNED.append((url, plain))

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summarize(latencies, failures)


def summarize(latencies: list[float], failures: list[str]) -> dict[str, Any]:
    ordered = sorted(latencies)
    if not ordered:
        return {"n": 0, "failed": len(failures)}

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3, 3)

    return {
        "n": len(ordered),
        "failed": len(failures),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(ordered[-1] * 1e3, 3),
    }


def failover(call: Callable[[], None], kill: Callable[[], None], workers: int) -> dict[str, Any]:
    """Load from ``workers`` threads; ``kill`` after 1 s; 2 s more."""
    samples: list[tuple[float, float]] = []
    failures: list[str] = []
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                call()
            except Exception as exc:
                failures.append(repr(exc))
                continue
            samples.append((time.perf_counter(), time.perf_counter() - started))

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    killed_at = time.perf_counter()
    kill()
    time.sleep(2.0)
    stop.set()
    for thread in threads:
        thread.join()
    before = [lat for t, lat in samples if t < killed_at]
    after = [lat for t, lat in samples if t >= killed_at + 0.5]
    return {
        "requests": len(samples) + len(failures),
        "failed": len(failures),
        "failures_sample": failures[:3],
        "p50_before_ms": round(statistics.median(before) * 1e3, 3),
        "worst_ms": round(max(lat for _, lat in samples) * 1e3, 3),
        "p50_after_ms": round(statistics.median(after) * 1e3, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="per region and scenario")
    parser.add_argument("--workers", type=int, default=4, help="client threads per region")
    parser.add_argument("--overhead-requests", type=int, default=1000)
    parser.add_argument(
        "--insecure-http", action="store_true", help="plain HTTP everywhere (to compare)"
    )
    parser.add_argument("--token", help="send Authorization: Bearer TOKEN with each inference")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    global SCHEME, TOKEN
    SCHEME = "http" if args.insecure_http else "https"
    if args.token:
        TOKEN = args.token
        HEADERS["Authorization"] = f"Bearer {args.token}"

    procs = Procs()
    sites: dict[str, SiteProcess] = {}
    with tempfile.TemporaryDirectory(prefix="geo-bench-") as tmp:
        root = Path(tmp)
        try:
            results = run(root, procs, sites, args)
        finally:
            for site in sites.values():
                site.stop()
            procs.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"\nwrote {args.out}")


def run(root: Path, procs: Procs, sites: dict[str, SiteProcess], args: Any) -> dict[str, Any]:
    global CA_FILE, HUB_DIR, TOKEN
    init = init_hub(root / "hub")
    HUB_DIR = root / "hub"
    tls = SCHEME == "https"
    hub = HubProcess(root / "hub", tls=tls).start()
    if hub.proc is not None:
        procs.add(hub.proc)
    CA_FILE = hub.ca_file if tls else None
    admin = HubClient(hub.url, init.admin_token, ca_file=CA_FILE)
    admin.push(write_model(root / "sensor.onnx"), MODEL)
    if TOKEN is None:  # sites require an infer token: mint one unless --token gave it
        TOKEN = admin.create_token("geo-bench", "infer").token
        HEADERS["Authorization"] = f"Bearer {TOKEN}"
    labels = {
        "central": "US",
        "eu-local": "EU",
        "us-local": "US",
        "in-local": "IN",
        "eu-backup": "EU",
    }
    for name, jurisdiction in labels.items():
        created = admin.add_site(name, {"jurisdiction": jurisdiction})
        admin.assign(name, f"{MODEL}:1")
        sites[name] = SiteProcess(
            root / f"site-{name}", hub.url, created["enrollment_token"]
        ).start(wait_ready=False)
    for site in sites.values():
        wait_http(
            f"{site.url}/v2/models/{MODEL}/ready", 60, site.proc, ca_file=CA_FILE, token=TOKEN
        )
    admin.close()

    central_links = {r: wan(procs, sites["central"].port, d) for r, (_, d) in REGIONS.items()}
    local_links = {r: wan(procs, sites[f"{r}-local"].port, LOCAL_DELAY_S) for r in REGIONS}
    backup_link = wan(procs, sites["eu-backup"].port, BACKUP_DELAY_S)
    for url in [*central_links.values(), *local_links.values(), backup_link]:
        wait_http(f"{url}/v2/health/live", 30, ca_file=CA_FILE)

    def region_sites(region: str) -> list[dict[str, Any]]:
        jurisdiction = REGIONS[region][0]
        out = [
            {
                "name": f"{region}-local",
                "url": local_links[region],
                "labels": {"jurisdiction": jurisdiction},
            }
        ]
        if region == "eu":
            out.append({"name": "eu-backup", "url": backup_link, "labels": {"jurisdiction": "EU"}})
        return out

    gateways = {r: gateway(procs, root, r, region_sites(r), REGIONS[r][0]) for r in REGIONS}
    clients = {r: sdk_client(region_sites(r), REGIONS[r][0]) for r in REGIONS}

    def sdk_call(region: str) -> Callable[[], Callable[[], None]]:
        client = clients[region]

        def call() -> None:
            client.infer(MODEL, {"X": X})

        return lambda: call

    warm: dict[str, list[Plain]] = {}
    lock = threading.Lock()

    def plain_call(url: str) -> Callable[[], Callable[[], None]]:
        """Each worker takes a kept-alive connection (the SDK's are pooled too), so neither
        side pays the WAN handshake inside the measurement."""

        def make() -> Callable[[], None]:
            with lock:
                idle = warm.setdefault(url, [])
                plain = idle.pop() if idle else Plain(url)
            threading.current_thread().__dict__.setdefault("_back", []).append((url, plain))
            return plain.infer

        return make

    def measured(make: Callable[[], Callable[[], None]], n: int, workers: int) -> dict[str, Any]:
        result = drive(make, n, workers)
        with lock:
            while RETURNED:
                url, plain = RETURNED.pop()
                warm.setdefault(url, []).append(plain)
        return result

    regions: dict[str, Any] = {}
    for region, (_, delay) in REGIONS.items():
        print(f"region {region} ...", flush=True)
        measured(plain_call(central_links[region]), 8, args.workers)  # warm-up
        measured(sdk_call(region), 40, args.workers)
        measured(plain_call(gateways[region]), 40, args.workers)
        central = measured(plain_call(central_links[region]), args.requests, args.workers)
        sdk = measured(sdk_call(region), args.requests, args.workers)
        gw = measured(plain_call(gateways[region]), args.requests, args.workers)
        regions[region] = {
            "wan_one_way_ms": delay * 1e3,
            "central": central,
            "local_sdk": sdk,
            "local_gateway": gw,
            "reduction_p50_sdk_pct": round(100 * (1 - sdk["p50_ms"] / central["p50_ms"]), 1),
            "reduction_p99_sdk_pct": round(100 * (1 - sdk["p99_ms"] / central["p99_ms"]), 1),
            "reduction_p50_gateway_pct": round(100 * (1 - gw["p50_ms"] / central["p50_ms"]), 1),
            "reduction_p99_gateway_pct": round(100 * (1 - gw["p99_ms"] / central["p99_ms"]), 1),
        }

    overhead = measure_overhead(root, procs, sites["us-local"], args.overhead_requests)

    print("failover ...", flush=True)
    fail_sdk = failover(sdk_call("eu")(), sites["eu-local"].kill, args.workers)
    sites["eu-local"].start()
    for client in clients.values():
        client.close()
    local_gw = threading.local()

    def gw_call() -> None:
        plain = getattr(local_gw, "plain", None)
        if plain is None:
            plain = local_gw.plain = Plain(gateways["eu"])
        plain.infer()

    time.sleep(2.5)  # the gateway's probes see eu-local back (breaker closes)
    fail_gw = failover(gw_call, sites["eu-local"].kill, args.workers)

    return {
        "benchmark": "geo",
        "command": "python bench/geo.py " + " ".join(sys.argv[1:]),
        "tls": SCHEME == "https",
        "token": bool(args.token),
        "requests_per_region": args.requests,
        "workers_per_region": args.workers,
        "local_one_way_ms": LOCAL_DELAY_S * 1e3,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "regions": regions,
        "overhead": overhead,
        "failover": {"sdk": fail_sdk, "gateway": fail_gw},
    }


def sdk_client(sites: list[dict[str, Any]], region: str) -> modelfleet.Client:
    """The SDK over a static site list, verifying https sites against the fleet CA."""
    return modelfleet.Client(sites=sites, data_region=region, token=TOKEN, ca_file=CA_FILE)


def measure_overhead(root: Path, procs: Procs, site: SiteProcess, requests: int) -> dict[str, Any]:
    """Direct vs SDK vs gateway to one site on loopback, no WAN link, one request at a time."""
    print("overhead ...", flush=True)
    # The site's own name: over TLS, the SDK and gateway check the certificate names it.
    sites = [{"name": "us-local", "url": site.url, "labels": {"jurisdiction": "US"}}]
    gw_url = gateway(procs, root, "overhead", sites, "US")
    direct, via_gw = Plain(site.url), Plain(gw_url)
    client = sdk_client(sites, "US")
    timings: dict[str, list[float]] = {"direct": [], "sdk": [], "gateway": []}
    calls: dict[str, Callable[[], Any]] = {
        "direct": direct.infer,
        "sdk": lambda: client.infer(MODEL, {"X": X}),
        "gateway": via_gw.infer,
    }
    for _ in range(100):  # warm-up
        for call in calls.values():
            call()
    for _ in range(requests):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            timings[name].append(time.perf_counter() - started)
    client.close()
    direct.close()
    via_gw.close()
    out = {name: summarize(values, []) for name, values in timings.items()}
    base = out["direct"]["p50_ms"]
    out["sdk_added_p50_ms"] = round(out["sdk"]["p50_ms"] - base, 3)
    out["gateway_added_p50_ms"] = round(out["gateway"]["p50_ms"] - base, 3)
    return out


def print_table(results: dict[str, Any]) -> None:
    print(
        f"\n{'region':<7}{'WAN 1-way':>10}{'central p50':>13}{'p99':>9}"
        f"{'SDK p50':>10}{'p99':>8}{'gw p50':>9}{'p99':>8}{'cut p50 SDK/gw':>18}"
    )
    for region, row in results["regions"].items():
        c, s, g = row["central"], row["local_sdk"], row["local_gateway"]
        print(
            f"{region:<7}{row['wan_one_way_ms']:>8.0f}ms{c['p50_ms']:>11.1f}ms"
            f"{c['p99_ms']:>7.1f}ms{s['p50_ms']:>8.2f}ms{s['p99_ms']:>6.2f}ms"
            f"{g['p50_ms']:>7.2f}ms{g['p99_ms']:>6.2f}ms"
            f"{row['reduction_p50_sdk_pct']:>10.1f}%/{row['reduction_p50_gateway_pct']:.1f}%"
        )
    o = results["overhead"]
    print(
        f"\noverhead on loopback (p50): direct {o['direct']['p50_ms']:.3f} ms, SDK "
        f"{o['sdk']['p50_ms']:.3f} ms (+{o['sdk_added_p50_ms']:.3f}), gateway "
        f"{o['gateway']['p50_ms']:.3f} ms (+{o['gateway_added_p50_ms']:.3f})"
    )
    for name, f in results["failover"].items():
        print(
            f"failover via {name}: {f['requests']} requests, {f['failed']} failed, p50 "
            f"{f['p50_before_ms']:.2f} ms before, worst {f['worst_ms']:.1f} ms, "
            f"p50 after {f['p50_after_ms']:.2f} ms (eu-backup is 10 ms away)"
        )


if __name__ == "__main__":
    main()
