"""Federated learning benchmark: modelfleet through real processes vs Flower's simulation.

1. FedAvg on scikit-learn's ``load_digits``, non-IID (sorted by label, 20 shards, 2 per
   site), 10 sites, softmax regression, 30 rounds. modelfleet runs a real hub process
   and 10 real site processes talking HTTP on loopback; Flower runs the same partition,
   the same local trainer (modelfleet's numpy SGD, same seeds) in its Ray-based
   simulation engine. Both are scored per round on the same held-out test set.
2. Aggregating 100 updates of 1,000,000 float32: modelfleet's streaming FedAvg path
   (``aggregate_round``, the code the hub runs) vs Flower's ``aggregate``, each in its own
   process (Flower's in ``FLOWER_PYTHON``) on the same synthetic updates; results compared.

Also prints where a modelfleet round's time goes (medians from the hub's timestamps).

    .venv/bin/python bench/federated.py [--rounds 30] [--sites 10] [--skip-flower]

Prints the figures and writes bench/results/federated.json. Never run as a test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bench_updates import synthetic_updates  # noqa: E402

from modelfleet.federation import wire  # noqa: E402
from modelfleet.federation.rounds import aggregate_round, default_stages  # noqa: E402
from modelfleet.federation.simulation import digits_sites  # noqa: E402
from modelfleet.federation.specs import (  # noqa: E402
    build_onnx,
    evaluate,
    init_weights,
    read_onnx,
    unflatten,
)
from modelfleet.federation.strategies import Update, make_strategy  # noqa: E402
from modelfleet.hub.bootstrap import init_hub  # noqa: E402
from modelfleet.hub_client import HubClient  # noqa: E402
from modelfleet.sim.launcher import HubProcess, SiteProcess, wait_http  # noqa: E402

JOB = "bench-fedavg"


def write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    header = ",".join([f"f{i}" for i in range(x.shape[1])] + ["label"])
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="", fmt="%.9g")
    return path


def run_ours(args: argparse.Namespace) -> dict:
    spec, sites, (x_test, y_test) = digits_sites(args.sites, non_iid=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        init = init_hub(tmp / "hub")
        hub = HubProcess(tmp / "hub").start()
        admin = HubClient(hub.url, init.admin_token, ca_file=hub.ca_file)
        procs: list[SiteProcess] = []
        try:
            for site in sites:
                data = write_csv(tmp / f"{site.name}.csv", site.x, site.y)
                config = tmp / f"{site.name}.yaml"
                config.write_text(
                    yaml.safe_dump(
                        {
                            "datasets": {"digits": {"path": str(data), "eval_fraction": 0.0}},
                            "federation": {"participate": True},
                        }
                    )
                )
                token = admin.add_site(site.name, {"region": "eu-west"})["enrollment_token"]
                procs.append(
                    SiteProcess(
                        tmp / f"state-{site.name}",
                        hub.url,
                        token,
                        extra_env={
                            "MODELFLEET_SITE_CONFIG_FILE": str(config),
                            "MODELFLEET_SITE_REPORT_INTERVAL_S": "2",
                        },
                    ).start(wait_ready=False)
                )
            for proc in procs:
                wait_http(f"{proc.url}/v2/health/ready", 120, proc.proc)
            model = tmp / "init.onnx"
            onnx.save(build_onnx(spec, init_weights(spec)), str(model))
            admin.push(model, "digits")
            deadline = time.monotonic() + 60
            while len(admin.get_federation_consents()) < args.sites:
                if time.monotonic() > deadline:
                    raise RuntimeError("sites did not declare consent")
                time.sleep(0.2)
            started = time.perf_counter()
            admin.start_federated_job(
                {
                    "id": JOB,
                    "model": "digits",
                    "data": "digits",
                    "rounds": args.rounds,
                    "min_sites": args.sites,
                    "local_epochs": args.local_epochs,
                    "lr": args.lr,
                    "batch_size": args.batch_size,
                }
            )
            while True:  # the light listing, so polling does not load the hub
                listed = admin.list_federated_jobs()
                if listed[0]["state"] in ("completed", "failed", "aborted"):
                    break
                time.sleep(0.1)
            total = time.perf_counter() - started
            job = admin.get_federated_job(JOB)
            if job["state"] != "completed":
                raise RuntimeError(f"job ended {job['state']}: {job['message']}")
            history = []
            for r in job["round_details"]:
                if r["round"] < args.rounds:
                    blob = admin.get_federated_round_weights(JOB, r["round"] + 1)
                    _, arrays = wire.unpack(blob)
                    weights = unflatten(spec, arrays["weights"])
                else:
                    pulled = tmp / "result.onnx"
                    admin.pull(f"digits:{job['result_version']}", pulled)
                    weights = read_onnx(onnx.load(str(pulled)))[1]
                history.append({"round": r["round"], **evaluate(spec, weights, x_test, y_test)})
            return {
                "total_s": total,
                "round_s": [r["duration_s"] for r in job["round_details"]],
                "cycle_s": cycle_times(job["round_details"]),
                "timeline": timeline(job["round_details"]),
                "history": history,
                "result_version": job["result_version"],
            }
        finally:
            for proc in procs:
                proc.stop()
            admin.close()
            hub.stop()


def _t(value: str | datetime) -> float:
    """A timestamp of the job's record (a datetime) or of its JSON form (ISO text)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.timestamp()


def cycle_times(rounds: list[dict]) -> list[float]:
    """Close-to-close times: what Flower's per-round marks measure (one whole round each)."""
    closes = [_t(r["closed_at"]) for r in rounds]
    return [b - a for a, b in itertools.pairwise(closes)]


def timeline(rounds: list[dict]) -> dict[str, float]:
    """Median of each phase of a round, in seconds, from the hub's own timestamps."""
    phases: dict[str, list[float]] = {"open_to_first_update": [], "first_to_last_update": []}
    phases |= {"last_update_to_close": [], "close_to_next_open": []}
    for r, nxt in itertools.zip_longest(rounds, rounds[1:]):
        received = sorted(_t(u["received_at"]) for u in r["updates"])
        opened, closed = _t(r["opened_at"]), _t(r["closed_at"])
        phases["open_to_first_update"].append(received[0] - opened)
        phases["first_to_last_update"].append(received[-1] - received[0])
        phases["last_update_to_close"].append(closed - received[-1])
        if nxt is not None:
            phases["close_to_next_open"].append(_t(nxt["opened_at"]) - closed)
    return {k: statistics.median(v) for k, v in phases.items() if v}


def run_flower(args: argparse.Namespace) -> dict | None:
    python = os.environ.get("FLOWER_PYTHON", sys.executable)
    cmd = [python, str(ROOT / "bench" / "federated_flower.py"), "--rounds", str(args.rounds)]
    cmd += ["--sites", str(args.sites), "--local-epochs", str(args.local_epochs)]
    cmd += ["--lr", str(args.lr), "--batch-size", str(args.batch_size), "--job", JOB]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        print("Flower run failed:\n" + done.stderr[-3000:], file=sys.stderr)
        return None
    result: dict = json.loads(lines[-1])
    result["process_wall_s"] = wall
    return result


def bench_aggregation(with_flower: bool, repeats: int = 3) -> dict:
    deltas, counts = synthetic_updates()
    n, size = len(deltas), deltas[0].size
    base = np.zeros(size, np.float32)
    ours = []
    for _ in range(repeats):
        started = time.perf_counter()
        out = aggregate_round(
            make_strategy("fedavg"),
            base,
            {},
            (Update(f"s{i}", d, c) for i, (d, c) in enumerate(zip(deltas, counts, strict=True))),
            round_number=1,
            stages=default_stages(),
        )
        ours.append(time.perf_counter() - started)
    del deltas  # Flower's process builds its own copy
    flower_s = flower_aggregation(out.weights) if with_flower else None
    return {
        "updates": n,
        "parameters": size,
        "modelfleet_s": min(ours),
        "flower_s": flower_s,
        # float64 total + float32 partial sum + float32 scaling buffer, whatever n is.
        "modelfleet_state_bytes": size * 16,
        "flower_inputs_bytes": n * size * 4,
        "note": "modelfleet folds updates one at a time into running sums (the hub streams "
        "them from the store); Flower's aggregate needs every update materialised at once. "
        "Each side runs in its own process on the same synthetic updates.",
    }


def flower_aggregation(ours: np.ndarray) -> float | None:
    """Flower's ``aggregate`` on the same updates, in Flower's own process and venv."""
    python = os.environ.get("FLOWER_PYTHON", sys.executable)
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "flower.npy"
        cmd = [
            python,
            str(ROOT / "bench" / "federated_flower.py"),
            "--aggregation-out",
            str(result),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0 or not result.exists():
            print("Flower aggregation failed:\n" + done.stderr[-2000:], file=sys.stderr)
            return None
        # Same updates, same algorithm: the two results must agree.
        np.testing.assert_allclose(ours, np.load(result), rtol=1e-4, atol=1e-5)
        seconds: float = json.loads(done.stdout.splitlines()[-1])["flower_s"]
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-flower", action="store_true")
    args = parser.parse_args()
    command = "python bench/federated.py " + " ".join(sys.argv[1:])

    ours = run_ours(args)
    flower = None if args.skip_flower else run_flower(args)
    aggregation = bench_aggregation(with_flower=not args.skip_flower)

    print(f"\nFedAvg, digits non-IID, {args.sites} sites, {args.rounds} rounds  ({command})")
    print(f"{'round':>5} {'modelfleet acc':>15} {'flower acc':>11}")
    for i, row in enumerate(ours["history"]):
        other = flower["history"][i]["accuracy"] if flower else float("nan")
        print(f"{row['round']:>5} {row['accuracy']:>15.4f} {other:>11.4f}")
    summary = {
        "modelfleet_total_s": ours["total_s"],
        "modelfleet_median_round_s": statistics.median(ours["round_s"]),
        "modelfleet_median_cycle_s": statistics.median(ours["cycle_s"]),
        "modelfleet_final_accuracy": ours["history"][-1]["accuracy"],
    }
    if flower:
        diffs = [
            abs(a["accuracy"] - b["accuracy"])
            for a, b in zip(ours["history"], flower["history"], strict=False)
        ]
        summary |= {
            "flower_total_s": flower["total_s"],
            "flower_median_round_s": statistics.median(flower["round_s"]),
            "flower_final_accuracy": flower["history"][-1]["accuracy"],
            "max_abs_accuracy_difference": max(diffs),
            "median_round_ratio": statistics.median(ours["round_s"])
            / statistics.median(flower["round_s"]),
        }
    for key, value in summary.items():
        print(f"{key:>32}: {value:.4f}")
    for key, value in ours["timeline"].items():
        print(f"{'median ' + key.replace('_', ' '):>32}: {value * 1000:.1f} ms")
    print(
        f"aggregation of {aggregation['updates']} x {aggregation['parameters']:,} float32: "
        f"modelfleet {aggregation['modelfleet_s'] * 1000:.0f} ms, "
        f"flower {(aggregation['flower_s'] or float('nan')) * 1000:.0f} ms"
    )
    out = ROOT / "bench" / "results" / "federated.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": command,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "config": vars(args),
                "summary": summary,
                "modelfleet": ours,
                "flower": flower,
                "aggregation": aggregation,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
