"""Soak: a real hub and three real sites under steady inference load while random faults are
injected (SIGKILL a site or the hub, black-hole a site's link to the hub or its clients' link
to it, a canary rollout), with four invariants checked throughout: no failed request a
healthy reachable site could have answered, exact telemetry totals after the heal, every
rollout in a defined end state, no process above the memory bound. See
``src/modelfleet/sim/soak.py`` for the faults and how each invariant is checked.

Not run in CI (``tests/faults/test_soak_short.py`` runs a ~20-second version).

Example: ``.venv/bin/python bench/soak.py --minutes 5 --seed 1`` prints the figures and
writes ``bench/results/soak.json``; exit code 1 if any invariant was violated.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "soak.json"
sys.path.insert(0, str(ROOT / "src"))

from modelfleet.sim.soak import FAULT_KINDS, RSS_BOUND_MB, SoakConfig, run_soak  # noqa: E402


def show(report: dict[str, Any]) -> None:
    req = report["requests"]
    tel = report["telemetry"]
    print(f"soak: seed {report['seed']}, {report['duration_s']} s ({report['load_s']} s of load)")
    print("faults injected: " + ", ".join(f"{k} {v}" for k, v in report["faults"].items()))
    print(
        f"requests: {req['ok']} ok, {req['expected_failed']} expected failures "
        f"(site killed or cut off), {req['violating']} violating"
    )
    print(f"telemetry: {tel['ok']} answered, hub counted {tel['hub']}")
    for row in tel["rows"]:
        print(f"  {row['site']} {row['model']}:{row['version']}: {row['ok']} / hub {row['hub']}")
    print("rollouts: " + ", ".join(f"v{r['to_version']} {r['state']}" for r in report["rollouts"]))
    for r in report["rollouts"]:
        if r["reason"]:
            print(f"  v{r['to_version']}: {r['reason']}")
    rss = ", ".join(f"{k} {v:.0f}" for k, v in report["max_rss_mb"].items())
    print(f"max RSS (MB, bound {report['rss_bound_mb']:.0f}): {rss}")
    print(f"violations: {len(report['violations'])}")
    for v in report["violations"]:
        print(f"  {v}")
    for n in report["notes"]:
        print(f"  note: {n}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="example: .venv/bin/python bench/soak.py --minutes 5 --seed 1",
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="how long faults go on")
    parser.add_argument("--faults", type=int, default=None, help="exactly N faults instead")
    parser.add_argument("--seed", type=int, default=1, help="what is injected, and when")
    parser.add_argument("--kinds", default=",".join(FAULT_KINDS), help="comma-separated")
    parser.add_argument("--clients-per-site", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=2.0, help="per request, seconds")
    parser.add_argument("--rss-bound-mb", type=float, default=RSS_BOUND_MB)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelfleet-soak-") as tmp:
        report = run_soak(
            SoakConfig(
                root=Path(tmp),
                minutes=args.minutes,
                faults=args.faults,
                seed=args.seed,
                kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()),
                clients_per_site=args.clients_per_site,
                deadline_s=args.deadline,
                rss_bound_mb=args.rss_bound_mb,
            )
        )
    report["command"] = " ".join(["bench/soak.py", *sys.argv[1:]])
    report["machine"] = {"python": platform.python_version(), "cpus": _cpus()}
    show(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if report["violations"] else 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    raise SystemExit(main())
