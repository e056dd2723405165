"""The tables ``bench/serve.py`` prints: every cell, and the TLS rows side by side."""

from __future__ import annotations

import statistics
from typing import Any

#: The servers of the TLS table, in its column order (names as in ``serve.py``).
PLAIN_AND_TLS = ("modelfleet", "modelfleet-tls", "mlserver", "mlserver-tls")
TLS_SERVERS = ("modelfleet-tls", "mlserver-tls")

__all__ = [
    "PLAIN_AND_TLS",
    "TLS_SERVERS",
    "print_table",
    "print_tls_table",
    "summarise",
    "tls_cost",
]


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of the repeated runs per figure, with the spread of throughput kept."""
    return {
        "rps": round(statistics.median(r["rps"] for r in runs), 1),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 3),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 3),
        "rps_runs": [r["rps"] for r in runs],
        "p99_runs_ms": [r["p99_ms"] for r in runs],
        "errors": sum(r["errors"] for r in runs),
        **_cpu(runs),
    }


def _cpu(runs: list[dict[str, Any]]) -> dict[str, Any]:
    values = [r["server_cpu_us_per_req"] for r in runs if r.get("server_cpu_us_per_req")]
    if not values:
        return {}
    return {
        "server_cpu_us_per_req": round(statistics.median(values), 1),
        "server_cpu_runs_us": values,
    }


def print_table(results: list[dict[str, Any]], servers: list[str], levels: list[int]) -> None:
    print("\n| model | conc | server | req/s | p50 ms | p99 ms | vs mlserver | vs fastapi |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    cells = {(r["model"], r["server"], r["concurrency"]): r for r in results}
    for model in dict.fromkeys(r["model"] for r in results):
        for level in levels:
            for kind in servers:
                cell = cells.get((model, kind, level))
                if cell is None:
                    continue
                ratios = []
                for base in ("mlserver", "fastapi"):
                    # TLS rows against MLServer with TLS too.
                    if base == "mlserver" and kind in TLS_SERVERS:
                        base = "mlserver-tls"
                    other = cells.get((model, base, level))
                    ratios.append(f"{cell['rps'] / other['rps']:.2f}x" if other else "-")
                print(
                    f"| {model} | {level} | {kind} | {cell['rps']:.0f} | {cell['p50_ms']:.3f} | "
                    f"{cell['p99_ms']:.3f} | {ratios[0]} | {ratios[1]} |"
                )


def print_tls_table(results: list[dict[str, Any]], levels: list[int]) -> None:
    """What TLS costs each server (kept-alive connections), and modelfleet vs MLServer with
    TLS on both: p50 latency at c=1, throughput at the other levels, and at every level the
    server's CPU time per request (what throughput follows once the server is CPU-bound,
    and steady when other work shares the machine)."""
    cells = {(r["model"], r["server"], r["concurrency"]): r for r in results}
    print(
        "\n| model | figure | modelfleet | modelfleet TLS | TLS cost | MLServer | MLServer TLS "
        "| TLS cost | modelfleet vs MLServer, TLS both |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for model in dict.fromkeys(r["model"] for r in results):
        for level in levels:
            row = [cells.get((model, kind, level)) for kind in PLAIN_AND_TLS]
            if None in row:
                continue
            quad = [cell or {} for cell in row]
            keys = ["p50_ms" if level == 1 else "rps"]
            if all(c.get("server_cpu_us_per_req") for c in quad):
                keys.append("server_cpu_us_per_req")
            for key in keys:
                _tls_row(model, level, key, quad)


_FIGURES = {"p50_ms": "p50 ms", "rps": "req/s", "server_cpu_us_per_req": "server CPU us/req"}


def _tls_row(model: str, level: int, key: str, quad: list[dict[str, Any]]) -> None:
    mf, mf_tls, ml, ml_tls = quad
    higher_is_better = key == "rps"
    # How many times better modelfleet is, whichever way round "better" is.
    ratio = mf_tls[key] / ml_tls[key] if higher_is_better else ml_tls[key] / mf_tls[key]
    spec = ".0f" if higher_is_better else (".3f" if key == "p50_ms" else ".1f")
    shown = [format(c[key], spec) for c in quad]
    print(
        f"| {model} | c={level} {_FIGURES[key]} | {shown[0]} | {shown[1]} | "
        f"{tls_cost(mf, mf_tls, key):+.1f} % | {shown[2]} | {shown[3]} | "
        f"{tls_cost(ml, ml_tls, key):+.1f} % | {ratio:.2f}x |"
    )


def tls_cost(plain: dict[str, Any], tls: dict[str, Any], key: str) -> float:
    """Per cent worse with TLS: fewer requests (``rps``), more latency or CPU per request."""
    change = 100 * (tls[key] / plain[key] - 1)
    return -change if key == "rps" else change
