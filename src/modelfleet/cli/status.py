"""``modelfleet status``: every site at a glance, optionally refreshed."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from modelfleet.cli.common import (
    DEFAULT_HUB,
    HubOpt,
    JsonOpt,
    TokenOpt,
    client,
    console,
    err_console,
    jsonable,
    print_json,
    table,
    when,
)
from modelfleet.hub_client import HubClient


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.2f}%"


def _rows(doc: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for site in doc["sites"]:
        models = " ".join(f"{m['model']}:{m['version']}" for m in site["models"]) or " ".join(
            f"{name}:{v}" for name, v in sorted(site["serving"].items())
        )
        dropped = site["dropped"]
        rows.append(
            [
                site["site"],
                "online" if site["online"] else "OFFLINE",
                when(site["last_seen"]),
                models or "-",
                f"{site['requests_per_s']:.1f}",
                _pct(site["error_rate"]),
                _ms(site["p99_s"]),
                ", ".join(site["drift"]) or "-",
                f"{dropped['windows']} ({dropped['requests']} req)" if dropped["windows"] else "0",
                site["requests_total"],
            ]
        )
    return rows


def _render(doc: dict[str, Any]) -> None:
    columns = [
        "SITE", "STATE", "LAST SEEN", "MODELS", "REQ/S", "ERRORS", "P99", "DRIFT",
        "DROPPED", "TOTAL REQ",
    ]  # fmt: skip
    table(f"fleet status (last {doc['recent_s']:.0f} s)", columns, _rows(doc))
    if doc["fleet"]:
        fleet = [
            [
                f"{f['model']}:{f['version']}",
                f"{f['requests_per_s']:.1f}",
                _pct(f["error_rate"]),
                _ms(f["p50_s"]),
                _ms(f["p95_s"]),
                _ms(f["p99_s"]),
            ]
            for f in doc["fleet"]
        ]
        table("fleet-wide", ["MODEL", "REQ/S", "ERRORS", "P50", "P95", "P99"], fleet)


def fleet_warnings(hc: HubClient) -> list[str]:
    """What an operator must not miss: the hub reached over ``http://``, each site whose
    last report gave an ``http://`` URL (a site of a hub run with ``--insecure-http``),
    and each site that refused its desired state (it stays on the state it had)."""
    warnings = []
    if hc.url.lower().startswith("http://"):
        warnings.append(
            f"the hub {hc.url} is reached over plain HTTP: tokens, models and telemetry "
            "cross the network in clear (hub serve --insecure-http)"
        )
    sites = hc.list_sites()
    plain = sorted(s.name for s in sites if str(s.url or "").lower().startswith("http://"))
    if plain:
        warnings.append(
            f"{len(plain)} site(s) serve plain HTTP, inference data in clear: "
            f"{', '.join(plain)} (their hub runs with --insecure-http)"
        )
    for site in sites:
        if site.desired_state_refused:
            warnings.append(
                f"site {site.name} refused its desired state and keeps the one it had: "
                f"{site.desired_state_refused}"
            )
    return warnings


def _warn(hc: HubClient) -> None:
    """On stderr, so ``--json`` output stays the document alone."""
    for line in fleet_warnings(hc):
        err_console.print(f"[yellow]warning:[/yellow] {line}", highlight=False)


def status(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.", min=0.2)] = 2.0,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Every site at a glance: online, last seen, models, requests/s, errors, p99, drift, drops."""
    with client(hub, token) as hc:
        if not watch:
            doc = hc.get_telemetry_status()
            _warn(hc)
            if json_out:
                print_json(doc)
            else:
                _render(jsonable(doc))
            return
        while True:
            doc = hc.get_telemetry_status()
            if json_out:
                print_json(doc)
            else:
                console.clear()
                _render(jsonable(doc))
            _warn(hc)
            time.sleep(interval)
