"""Gateway overhead per request with each HTTP client, side by side in one run.

The gateway forwards every request to a site with an HTTP/1.1 client; this measures what
that client costs. One site (the production OIP server on the builtin HTTP server, no
telemetry, a [1, 4] FP32 ``Mul`` model, so compute is negligible) and one gateway process
per (client, server) pair, all routing to that site. The gateways run the same code
(``Gateway`` + ``Router`` over a static directory); only ``Router.pool`` differs:

- ``builtin``: :class:`modelfleet.transport.client.Pool` (asyncio streams, its own parsing);
- ``httpx``: ``httpx.AsyncClient`` (httpcore + h11), the general-purpose client, as installed;
- ``httpx-fast``: the same without a failed import per request (see :class:`HttpxPool`);
- ``h11``: h11's state machine under a pool of asyncio streams like the builtin one;
- ``httptools``: llhttp's response parser (httptools) under the same pool.

and each runs on the builtin HTTP server and on uvicorn (the gateway's server until now).

Measured, requests one at a time over kept-alive connections, interleaved across every
target so drift and other load hit all alike: p50 / p90 / p99 of a direct call to the site
and of a call through each gateway, the p50 each gateway adds, and each gateway process's
CPU time per request (``/proc/PID/stat``, so the figure does not depend on the load
generator sharing the cores; on the ``direct`` row, the site's CPU per request it served).
Then each client alone (no gateway) on one event loop: its own CPU per request.

Run: ``.venv/bin/python bench/gateway_clients.py [--requests 3000]`` (about a minute).
Prints a table and writes ``bench/results/gateway_clients.json``.

Internal entry points (child processes): ``--serve-site MODEL READY`` and
``--serve-gateway CLIENT SERVER SITE_URL READY``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "gateway_clients.json"
sys.path.insert(0, str(ROOT / "src"))

from modelfleet.errors import TransportFailure  # noqa: E402
from modelfleet.transport.client import HttpResponse, Origin  # noqa: E402

CLIENTS = ("builtin", "httpx", "httpx-fast", "h11", "httptools")
SERVERS = ("builtin", "uvicorn")
MODEL = "sensor"
BODY = json.dumps(
    {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, 2, 3]}]}
).encode()
_HEAD_LIMIT = 64 * 1024


# --------------------------------------------------------------------------- the clients


class HttpxPool:
    """``Router.pool`` on ``httpx.AsyncClient``.

    httpcore asks ``import sniffio`` on every request; sniffio is not installed here (anyio
    4.16 no longer needs it), so each request pays a failed import that scans ``sys.path``
    (~0.2 ms). ``fast`` short-circuits that import (``sys.modules["sniffio"] = None``: the
    import fails at once, the same code path follows), to show httpx at its best.
    """

    def __init__(self, *, fast: bool = False) -> None:
        import importlib.util

        import httpx

        if importlib.util.find_spec("sniffio") is None or sys.modules.get("sniffio") is None:
            if fast:
                sys.modules["sniffio"] = None  # type: ignore[assignment]
            else:
                sys.modules.pop("sniffio", None)

        self._httpx = httpx
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        self.client = httpx.AsyncClient(timeout=None, limits=limits)

    async def request(
        self,
        origin: Origin,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        url = f"http://{origin.hostport}{origin.prefix}{path}"
        try:
            response = await self.client.request(method, url, content=body, headers=headers)
        except self._httpx.TransportError as exc:
            raise TransportFailure(f"cannot connect to {origin.hostport}: {exc}") from exc
        return HttpResponse(
            response.status_code,
            {k.lower(): v for k, v in response.headers.items()},
            response.content,
        )

    def close(self) -> None:
        pass  # the process ends with the benchmark


class _StreamPool:
    """Idle asyncio stream connections per origin; subclasses speak HTTP on them."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], deque[Any]] = {}

    async def _open(self, origin: Origin) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_connection(origin.host, origin.port, limit=_HEAD_LIMIT)
        except OSError as exc:
            raise TransportFailure(f"cannot connect to {origin.hostport}: {exc}") from exc

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn[1].transport.abort()
        self._idle.clear()


class H11Pool(_StreamPool):
    """h11 (the parser under httpx and uvicorn's pure-Python mode) under our own pool."""

    def __init__(self) -> None:
        super().__init__()
        import h11

        self.h11 = h11

    async def request(
        self,
        origin: Origin,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        h11 = self.h11
        key = (origin.host, origin.port)
        idle = self._idle.setdefault(key, deque())
        if idle:
            reader, writer, conn = idle.pop()
        else:
            reader, writer = await self._open(origin)
            conn = h11.Connection(h11.CLIENT)
        fields = [("host", origin.hostport), ("content-length", str(len(body)))]
        fields += list((headers or {}).items())
        try:
            out = conn.send(h11.Request(method=method, target=origin.prefix + path, headers=fields))
            if body:
                out += conn.send(h11.Data(data=body))
            out += conn.send(h11.EndOfMessage())
            writer.write(out)
            status, got, chunks = 0, {}, []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    if not data:
                        raise TransportFailure("connection closed")
                    conn.receive_data(data)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    got = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise TransportFailure("connection closed")
        except BaseException:
            writer.transport.abort()
            raise
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            idle.append((reader, writer, conn))
        else:
            writer.transport.abort()
        return HttpResponse(status, got, b"".join(chunks))


class _Message:
    """httptools callbacks for one response."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.done = False
        self.keep_alive = False
        self.parser: Any = None

    def on_headers_complete(self) -> None:
        # Asked here: once the message completes, llhttp has reset what it knew.
        self.keep_alive = bool(self.parser.should_keep_alive())

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class HttptoolsPool(_StreamPool):
    """llhttp (httptools, the parser our server uses) under our own pool."""

    def __init__(self) -> None:
        super().__init__()
        import httptools

        self.httptools = httptools

    async def request(
        self,
        origin: Origin,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        key = (origin.host, origin.port)
        idle = self._idle.setdefault(key, deque())
        reader, writer = idle.pop() if idle else await self._open(origin)
        lines = [f"{method} {origin.prefix}{path} HTTP/1.1", f"host: {origin.hostport}"]
        lines.append(f"content-length: {len(body)}")
        lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
        message = _Message()
        parser = message.parser = self.httptools.HttpResponseParser(message)
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            while not message.done:
                data = await reader.read(65536)
                if not data:
                    raise TransportFailure("connection closed")
                parser.feed_data(data)
        except BaseException:
            writer.transport.abort()
            raise
        if message.keep_alive:
            idle.append((reader, writer))
        else:
            writer.transport.abort()
        return HttpResponse(parser.get_status_code(), message.headers, b"".join(message.body))


def make_pool(client: str) -> Any:
    if client.startswith("httpx"):
        return HttpxPool(fast=client == "httpx-fast")
    if client == "h11":
        return H11Pool()
    if client == "httptools":
        return HttptoolsPool()
    from modelfleet.transport.client import Pool

    return Pool()


# --------------------------------------------------------------------------- the processes


def write_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])
    const = helper.make_tensor("w", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["X", "w"], ["Y"])], MODEL, [x], [y], initializer=[const]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def serve_site(model: Path, ready: Path) -> None:
    from modelfleet.site.repository import ModelRepository
    from modelfleet.site.runtime import LoadedModel
    from modelfleet.site.server import InferenceServer
    from modelfleet.transport.listen import bind, bound_port, report_ready
    from modelfleet.transport.server import serve_http

    repository = ModelRepository()
    loaded = LoadedModel.load(model, name=MODEL, version=1, digest="bench")
    loaded.warm_up()
    repository.activate(loaded)
    sock = bind("127.0.0.1", 0)
    report_ready(sock, ready)
    app = InferenceServer(repository).app()
    serve_http(app, host="127.0.0.1", port=bound_port(sock), log_level="warning", sock=sock)


def serve_gateway(client: str, server: str, site_url: str, ready: Path) -> None:
    from modelfleet.routing.directory import SiteDirectory
    from modelfleet.routing.gateway import Gateway
    from modelfleet.routing.router import Router
    from modelfleet.transport.listen import bind, bound_port, report_ready
    from modelfleet.transport.server import serve_http

    sites = [{"name": "site", "url": site_url, "labels": {"jurisdiction": "US"}}]
    router = Router(SiteDirectory(sites=sites))
    router.pool = make_pool(client)
    sock = bind("127.0.0.1", 0)
    report_ready(sock, ready)
    serve_http(
        Gateway(router, default_region="US"),
        host="127.0.0.1",
        port=bound_port(sock),
        log_level="warning",
        engine="uvicorn" if server == "uvicorn" else "builtin",
        sock=sock,
    )


def spawn(args: list[str], ready: Path) -> tuple[subprocess.Popen[bytes], str]:
    from modelfleet.transport.listen import read_ready_file

    proc = subprocess.Popen([sys.executable, __file__, *args, str(ready)])
    deadline = time.monotonic() + 60
    while (report := read_ready_file(ready)) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{args} did not start")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{report.port}"


# --------------------------------------------------------------------------- measuring


class Plain:
    """The lightest caller: stdlib keep-alive HTTP posting OIP JSON."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def infer(self) -> None:
        self.conn.request(
            "POST", f"/v2/models/{MODEL}/infer", BODY, {"content-type": "application/json"}
        )
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(ordered: list[float], q: float) -> float:
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3, 3)


def measure(targets: dict[str, tuple[str, int]], requests: int, warmup: int) -> dict[str, Any]:
    callers = {name: Plain(url) for name, (url, _) in targets.items()}
    for _ in range(warmup):
        for caller in callers.values():
            caller.infer()
    cpu_before = {name: cpu_seconds(pid) for name, (_, pid) in targets.items()}
    timings: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(requests):
        for name, caller in callers.items():
            started = time.perf_counter()
            caller.infer()
            timings[name].append(time.perf_counter() - started)
    out: dict[str, Any] = {}
    for name, (_, pid) in targets.items():
        ordered = sorted(timings[name])
        # The site serves every target's requests: its CPU is per request it served.
        served = requests * (len(targets) if name == "direct" else 1)
        out[name] = {
            "n": len(ordered),
            "p50_ms": percentile(ordered, 0.50),
            "p90_ms": percentile(ordered, 0.90),
            "p99_ms": percentile(ordered, 0.99),
            "mean_ms": round(sum(ordered) / len(ordered) * 1e3, 3),
            "cpu_us_per_request": round((cpu_seconds(pid) - cpu_before[name]) / served * 1e6),
        }
    base = out["direct"]["p50_ms"]
    for row in out.values():
        row["added_p50_ms"] = round(row["p50_ms"] - base, 3)
    return out


def measure_clients(clients: list[str], site_url: str, requests: int) -> dict[str, Any]:
    """Each client alone on one event loop (uvloop, as the gateway): sequential requests to
    the site, CPU time of this process per request (the client's own cost)."""
    import uvloop

    origin = Origin.parse(site_url)
    headers = {"content-type": "application/json"}
    path = f"/v2/models/{MODEL}/infer"

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for client in clients:
            pool = make_pool(client)
            for _ in range(requests // 10):
                await pool.request(origin, "POST", path, BODY, headers)
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(requests):
                await pool.request(origin, "POST", path, BODY, headers)
            out[client] = {
                "cpu_us_per_request": round((time.process_time() - cpu) / requests * 1e6, 1),
                "wall_us_per_request": round((time.perf_counter() - wall) / requests * 1e6, 1),
            }
            pool.close()
        return out

    return uvloop.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="per target, interleaved")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--serve-site", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--serve-gateway", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_site:
        serve_site(Path(args.serve_site[0]), Path(args.serve_site[1]))
        return
    if args.serve_gateway:
        client, server, url, ready = args.serve_gateway
        serve_gateway(client, server, url, Path(ready))
        return
    command = " ".join(["python", "bench/gateway_clients.py", *sys.argv[1:]])
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="modelfleet-bench-gw-") as tmp:
            root = Path(tmp)
            site, site_url = spawn(["--serve-site", str(write_model(root / "m.onnx"))], root / "s")
            procs.append(site)
            targets = {"direct": (site_url, site.pid)}
            for server in args.servers.split(","):
                for client in args.clients.split(","):
                    name = f"{client}@{server}"
                    proc, url = spawn(["--serve-gateway", client, server, site_url], root / name)
                    procs.append(proc)
                    targets[name] = (url, proc.pid)
            load = os.getloadavg()[0]
            started = time.time()
            results = measure(targets, args.requests, args.warmup)
            alone = measure_clients(args.clients.split(","), site_url, args.requests)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
    doc = {
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "load_average_before": round(load, 2),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "requests_per_target": args.requests,
        "results": results,
        "client_alone": alone,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\n{command}   (load average before: {load:.2f})")
    print(f"{'target (client@server)':<26}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
          f"{'added p50':>11}{'CPU us/req':>12}")  # fmt: skip
    for name, row in results.items():
        print(
            f"{name:<26}{row['p50_ms']:>9.3f}{row['p90_ms']:>9.3f}{row['p99_ms']:>9.3f}"
            f"{row['added_p50_ms']:>+11.3f}{row['cpu_us_per_request']:>12}"
        )
    print("client alone, sequential requests to the site:")
    for client, row in alone.items():
        print(
            f"  {client:<10} CPU {row['cpu_us_per_request']:>7.1f} us/request, "
            f"{row['wall_us_per_request']:>7.1f} us wall"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
