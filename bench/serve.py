"""Inference serving benchmark: modelfleet site vs MLServer 1.7 vs a hand-written FastAPI app.

The same ONNX file is served by the three servers on loopback (all started at once, measured
in turn, see :func:`measure_model`), and driven by one load generator (wrk, with a Lua
script that posts one OIP v2 JSON request) at concurrency 1 and 32, for a small tabular
model (logistic regression on iris) and a larger one (100-tree random forest on digits),
both exported with ``modelfleet.export.from_sklearn``. Besides throughput and latency, each
run records the server's CPU time per request.

TLS rows: ``modelfleet-tls`` is the same server presenting the certificate a real site got
at enrollment from a TLS hub's fleet CA (``bench/tls_certs.py``), ``mlserver-tls`` is
MLServer serving HTTPS with a certificate from the same CA. wrk keeps its connections
alive, so the rows measure TLS records on established connections (one handshake per
connection, at the start), not handshakes.

``--token T`` adds ``Authorization: Bearer T`` to every request (a site's ``/v2`` may
require an ``infer`` token).

Run (``make bench`` does): ``.venv/bin/python bench/serve.py``. Needs ``wrk`` on PATH
(Debian: ``apt-get install -y wrk``) and MLServer in its own venv (``.venv-mlserver``, created
on first run: MLServer 1.7 pins older FastAPI/Starlette than modelfleet's).
Prints a table and writes ``bench/results/serve.json``.

Internal entry points (used by the runner, as child processes):
``serve.py --serve modelfleet|fastapi MODEL.onnx PORT [PARAMS_JSON [CERT KEY CA]]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fastapi import Request  # module level: FastAPI resolves the handler's annotations here
from serve_report import TLS_SERVERS, print_table, print_tls_table, summarise
from tls_certs import MLSERVER_TLS_LAUNCHER, BenchCerts, make_certs

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "serve.json"
MLSERVER_VENV = ROOT / ".venv-mlserver"
MLSERVER_SPEC = "mlserver==1.7.*"
#: MLServer 1.7's worker pool calls asyncio.get_event_loop() outside a loop: uvloop >= 0.22
#: raises there and every model fails to load, so the venv pins uvloop below 0.22.
MLSERVER_EXTRAS = ["onnxruntime", "uvloop<0.22"]
MODEL_NAME = "m"
SERVERS = ("modelfleet", "modelfleet-tls", "mlserver", "mlserver-tls", "fastapi")
#: Also measurable with --servers: modelfleet's server on uvicorn instead of its own listener.
EXTRA_SERVERS = ("modelfleet-uvicorn", "modelfleet-notelemetry")
#: Serving parameters given to the modelfleet site, as an assignment would.
SITE_PARAMS = {"max_batch_size": 32, "max_batch_time_ms": 2}


# --------------------------------------------------------------------------- models


def build_models(workdir: Path) -> dict[str, dict[str, Any]]:
    """Train and export the two models; returns name -> {path, body, rows}."""
    import numpy as np
    from sklearn.datasets import load_digits, load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from modelfleet.export import from_sklearn

    models: dict[str, dict[str, Any]] = {}
    specs = [
        ("logreg-iris", load_iris, LogisticRegression(max_iter=1000)),
        ("forest100-digits", load_digits, RandomForestClassifier(100, random_state=0)),
    ]
    for name, loader, estimator in specs:
        features, target = loader(return_X_y=True)
        features = features.astype(np.float32)
        estimator.fit(features, target)
        path = from_sklearn(estimator, features[:8], path=workdir / f"{name}.onnx")
        row = features[7:8]
        body = {
            "id": "bench",
            "inputs": [
                {
                    "name": "X",
                    "datatype": "FP32",
                    "shape": list(row.shape),
                    "data": [float(v) for v in row.ravel()],
                }
            ],
        }
        models[name] = {
            "path": path,
            "body": json.dumps(body),
            "features": int(features.shape[1]),
            "size_bytes": path.stat().st_size,
        }
    return models


# --------------------------------------------------------------------------- servers


def serve_modelfleet(
    model: Path,
    port: int,
    params: dict[str, Any],
    engine: str,
    *,
    telemetry: bool = True,
    tls_files: list[str] | None = None,
) -> None:
    """The production path: ModelRepository + LoadedModel + InferenceServer + serve_http,
    with the agent's telemetry (10 s windows, sketches, the on-disk outbox) unless turned
    off — the "modelfleet-notelemetry" variant measures what telemetry costs."""
    from modelfleet.pki.tls import ServerTlsFiles
    from modelfleet.site.repository import ModelRepository
    from modelfleet.site.runtime import LoadedModel
    from modelfleet.site.server import InferenceServer
    from modelfleet.site.spool import Spool
    from modelfleet.site.telemetry import TelemetryRecorder
    from modelfleet.transport.server import serve_http

    repository = ModelRepository()
    loaded = LoadedModel.load(model, name=MODEL_NAME, version=1, digest="bench", params=params)
    loaded.warm_up()
    repository.activate(loaded)
    recorder = None
    if telemetry:
        spool = Spool(Path(tempfile.mkdtemp(prefix="modelfleet-bench-spool-")) / "telemetry.db")
        recorder = TelemetryRecorder(spool.put, window_s=10.0, sample_requests=256)
        recorder.start()
    serve_http(
        InferenceServer(repository, observer=recorder).app(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        engine="uvicorn" if engine == "uvicorn" else "builtin",
        tls=ServerTlsFiles(*map(Path, tls_files)) if tls_files else None,
    )


def serve_fastapi(model: Path, port: int) -> None:
    """What a user would write by hand: FastAPI, uvicorn[standard], onnxruntime, numpy."""
    import numpy as np
    import onnxruntime as ort
    import uvicorn
    from fastapi import FastAPI

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]
    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> dict[str, Any]:
        doc = await request.json()
        feeds = {
            item["name"]: np.asarray(item["data"], dtype=np.float32).reshape(item["shape"])
            for item in doc["inputs"]
        }
        results = session.run(output_names, feeds)
        return {
            "model_name": name,
            "id": doc.get("id"),
            "outputs": [
                {
                    "name": out_name,
                    "datatype": "FP32" if out.dtype == np.float32 else "INT64",
                    "shape": list(out.shape),
                    "data": out.ravel().tolist(),
                }
                for out_name, out in zip(output_names, results, strict=True)
            ],
        }

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


MLSERVER_RUNTIME = '''
import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):
    """The same onnxruntime session settings as the other two servers."""

    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            self.settings.parameters.uri, options, providers=["CPUExecutionProvider"]
        )
        self._names = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {
            item.name: NumpyCodec.decode_input(item).astype(np.float32, copy=False)
            for item in payload.inputs
        }
        results = self._session.run(self._names, feeds)
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output(n, r) for n, r in zip(self._names, results)],
        )
'''


def ensure_mlserver() -> Path:
    """MLServer in its own venv: it pins FastAPI/Starlette versions modelfleet has moved past."""
    binary = MLSERVER_VENV / "bin" / "mlserver"
    if not binary.exists():
        print(f"creating {MLSERVER_VENV} with {MLSERVER_SPEC} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        subprocess.run(
            [str(MLSERVER_VENV / "bin" / "pip"), "install", "-q", MLSERVER_SPEC, *MLSERVER_EXTRAS],
            check=True,
        )
    return binary


def mlserver_dir(workdir: Path, model: Path, port: int) -> Path:
    folder = workdir / f"mlserver-{port}"
    (folder / MODEL_NAME).mkdir(parents=True, exist_ok=True)
    (folder / "onnx_runtime.py").write_text(MLSERVER_RUNTIME)
    # Defaults otherwise (as a user would start it); metrics and gRPC get free ports.
    settings = {
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "host": "127.0.0.1",
        "debug": False,
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    model_settings = {
        "name": MODEL_NAME,
        "implementation": "onnx_runtime.OnnxRuntime",
        "parameters": {"uri": str(model)},
    }
    (folder / MODEL_NAME / "model-settings.json").write_text(json.dumps(model_settings))
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    kind: str,
    model: Path,
    workdir: Path,
    log: Path,
    certs: BenchCerts | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    tls = kind in TLS_SERVERS
    if tls and certs is None:
        raise RuntimeError(f"{kind} needs the bench certificates")
    scheme = "https" if tls else "http"
    if kind.startswith("mlserver"):
        binary = ensure_mlserver()
        folder = mlserver_dir(workdir, model, port)
        cmd = [str(binary), "start", str(folder)]
        if certs is not None and tls:
            launcher = folder / "start_tls.py"
            launcher.write_text(MLSERVER_TLS_LAUNCHER)
            python = str(binary.parent / "python")
            cmd = [python, str(launcher), str(folder), str(certs.mlserver_cert)]
            cmd.append(str(certs.mlserver_key))
        ready = f"{scheme}://127.0.0.1:{port}/v2/models/{MODEL_NAME}/ready"
        cwd: Path | None = folder
    else:
        cmd = [sys.executable, __file__, "--serve", kind, str(model), str(port)]
        if kind.startswith("modelfleet"):
            cmd.append(json.dumps(SITE_PARAMS))
        if certs is not None and tls:
            cmd += [str(certs.site_cert), str(certs.site_key), str(certs.ca_file)]
        ready = f"{scheme}://127.0.0.1:{port}/v2/health/ready"
        cwd = None
    context = certs.client_context() if certs is not None and tls else None
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} exited with {proc.returncode}; see {log}")
        try:
            probe = urllib.request.Request(ready, headers=headers or {})
            with urllib.request.urlopen(probe, timeout=1, context=context) as answer:
                if answer.status == 200:
                    return proc, f"{scheme}://127.0.0.1:{port}"
        except (urllib.error.URLError, OSError):
            pass  # not up yet: ask again
        time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"{kind} not ready after 90 s; see {log}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def check_answer(
    url: str,
    body: str,
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> list[float]:
    """One request; the probabilities output, to prove all servers compute the same thing.
    With ``context``, the server's certificate is verified against the fleet CA."""
    request = urllib.request.Request(
        f"{url}/v2/models/{MODEL_NAME}/infer",
        data=body.encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=10, context=context) as answer:
        doc = json.loads(answer.read())
    for output in doc["outputs"]:
        if output["name"] == "probabilities":
            return [round(float(v), 5) for v in output["data"]]
    raise RuntimeError(f"no probabilities in {doc}")


# --------------------------------------------------------------------------- load


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%s
wrk.body = [==[%s]==]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"socket_errors\\": %%d, "
    .. "\\"status_errors\\": %%d, \\"p50_us\\": %%d, \\"p90_us\\": %%d, \\"p99_us\\": %%d, "
    .. "\\"mean_us\\": %%.1f}\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by every live process of group ``pgid``: a
    server and its workers (MLServer infers in child processes)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid:  # after the name: state, ppid, pgrp, ...
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def run_wrk(
    url: str,
    body: str,
    connections: int,
    seconds: int,
    workdir: Path,
    headers: dict[str, str] | None = None,
    server_pgid: int | None = None,
) -> dict[str, Any]:
    """wrk against ``url`` (http or https: wrk speaks TLS, without verifying, on kept-alive
    connections); ``headers`` are sent with every request (a bearer token, say). With
    ``server_pgid``, also the server's CPU time per request: unlike throughput, it hardly
    moves when other work shares the machine."""
    extra = "\n".join(
        f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}"
        for name, value in (headers or {}).items()
    )
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT % (extra, body))
    cmd = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
        "-s", str(script), f"{url}/v2/models/{MODEL_NAME}/infer",
    ]  # fmt: skip
    cpu_before = group_cpu_s(server_pgid) if server_pgid else 0.0
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True)
    cpu_used = group_cpu_s(server_pgid) - cpu_before if server_pgid else None
    line = next((s for s in out.stdout.splitlines() if s.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    raw = json.loads(line[len("BENCH ") :])
    seconds_run = raw["duration_us"] / 1e6
    return {
        "rps": round(raw["requests"] / seconds_run, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 3),
        "p90_ms": round(raw["p90_us"] / 1000, 3),
        "p99_ms": round(raw["p99_us"] / 1000, 3),
        "requests": raw["requests"],
        "errors": raw["socket_errors"] + raw["status_errors"],
        "server_cpu_us_per_req": (
            round(cpu_used * 1e6 / raw["requests"], 1)
            if cpu_used is not None and raw["requests"]
            else None
        ),
    }


# --------------------------------------------------------------------------- main


def measure_model(
    model_name: str,
    model: dict[str, Any],
    servers: list[str],
    levels: list[int],
    args: argparse.Namespace,
    workdir: Path,
    certs: BenchCerts | None,
) -> list[dict[str, Any]]:
    """Every server up at once (idle ones cost nothing), measured in turn: run ``i`` of each
    server comes before run ``i + 1`` of any, so load from elsewhere on the machine spreads
    over all of them instead of landing on whichever ran then. Each run has its warm-up."""
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    body = model["body"]
    running: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    answers: dict[str, list[float]] = {}
    cells: list[dict[str, Any]] = []
    try:
        for kind in servers:
            log = workdir / f"{model_name}-{kind}.log"
            running[kind] = start_server(kind, model["path"], workdir, log, certs, headers)
            context = certs.client_context() if certs and kind in TLS_SERVERS else None
            answers[kind] = check_answer(running[kind][1], body, context, headers)
        if len({json.dumps(a) for a in answers.values()}) > 1:
            raise RuntimeError(f"servers disagree on {model_name}: {answers}")
        for connections in levels:
            runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in servers}
            for _ in range(args.repeat):
                for kind, (proc, url) in running.items():
                    run_wrk(url, body, connections, args.warmup, workdir, headers)
                    run = run_wrk(url, body, connections, args.seconds, workdir, headers, proc.pid)
                    runs[kind].append(run)
            for kind in servers:
                cell = summarise(runs[kind])
                cell.update(model=model_name, server=kind, concurrency=connections)
                cells.append(cell)
                print(
                    f"{model_name:17} {kind:14} c={connections:<3} "
                    f"{cell['rps']:>9.0f} req/s  p50 {cell['p50_ms']:.3f} ms  "
                    f"p99 {cell['p99_ms']:.3f} ms  cpu {cell['server_cpu_us_per_req']} us/req  "
                    f"(rps runs {cell['rps_runs']})",
                    file=sys.stderr,
                )
    finally:
        for proc, _ in running.values():
            stop_server(proc)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before each")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per cell (median)")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--token", help="send Authorization: Bearer TOKEN with every request (default: none)"
    )
    parser.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, model, port = args.serve[0], Path(args.serve[1]), int(args.serve[2])
        if kind.startswith("modelfleet"):
            engine = "uvicorn" if kind == "modelfleet-uvicorn" else "builtin"
            serve_modelfleet(
                model,
                port,
                json.loads(args.serve[3]),
                engine,
                telemetry=kind != "modelfleet-notelemetry",
                tls_files=args.serve[4:7] or None,
            )
        else:
            serve_fastapi(model, port)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not on PATH: apt-get install -y wrk")
    servers = [s for s in args.servers.split(",") if s]
    unknown = sorted(set(servers) - {*SERVERS, *EXTRA_SERVERS})
    if unknown:
        sys.exit(f"unknown --servers {unknown}; known: {', '.join((*SERVERS, *EXTRA_SERVERS))}")
    levels = [int(c) for c in args.concurrency.split(",")]
    started = time.time()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="modelfleet-bench-") as tmp:
        workdir = Path(tmp)
        certs = make_certs(workdir / "pki") if set(servers) & set(TLS_SERVERS) else None
        models = build_models(workdir)
        for model_name, model in models.items():
            results += measure_model(model_name, model, servers, levels, args, workdir, certs)
    doc = {
        "command": "python bench/serve.py " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "load_generator": "wrk 4.1 (-t1), one JSON request of one row per call, loopback, "
        "kept-alive connections (HTTPS for the -tls servers: TLS 1.3, P-256 fleet-CA "
        "certificates)",
        "token": bool(args.token),
        "site_params": SITE_PARAMS,
        "models": {
            k: {"features": v["features"], "size_bytes": v["size_bytes"]} for k, v in models.items()
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print_table(results, servers, levels)
    if set(servers) & set(TLS_SERVERS):
        print_tls_table(results, levels)
    print(f"\nwritten to {args.out}; command: {doc['command']}")


if __name__ == "__main__":
    main()
