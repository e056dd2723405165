"""``modelfleet status``: every site at a glance, optionally refreshed."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from modelfleet.cli.common import (
    DEFAULT_HUB,
    Col,
    HubOpt,
    JsonOpt,
    TokenOpt,
    ago,
    client,
    console,
    jsonable,
    print_json,
    say,
    storage_lines,
    table,
    warn,
)
from modelfleet.errors import ModelfleetError
from modelfleet.hub_client import HubClient


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.2f}%"


def _rows(doc: dict[str, Any], now: datetime) -> list[list[Any]]:
    rows = []
    for site in doc["sites"]:
        models = " ".join(f"{m['model']}:{m['version']}" for m in site["models"]) or " ".join(
            f"{name}:{v}" for name, v in sorted(site["serving"].items())
        )
        dropped = site["dropped"]
        rows.append(
            [
                site["site"],
                # Online means seen within the hub's window; how long ago matters when not.
                "online" if site["online"] else f"OFFLINE {ago(site['last_seen'], now)}",
                models or "-",
                f"{site['requests_per_s']:.1f}",
                _pct(site["error_rate"]),
                _ms(site["p99_s"]),
                ", ".join(site["drift"]) or "-",
                f"{dropped['windows']}w/{dropped['requests']}r" if dropped["windows"] else "0",
            ]
        )
    return rows


def _render(doc: dict[str, Any]) -> None:
    """Sized for 100 columns: the site name whole, an age instead of a timestamp, the
    total request count left to ``--json``; a cut cell ends in an ellipsis."""
    columns: list[str | Col] = [
        Col("SITE", keep=True), "STATE", Col("MODELS", free=True), "REQ/S", "ERRORS",
        "P99", Col("DRIFT", free=True), "DROPPED",
    ]  # fmt: skip
    table(
        f"fleet status (last {doc['recent_s']:.0f} s)",
        columns,
        _rows(doc, datetime.now(UTC)),
        empty="no sites yet: modelfleet site add NAME -l region=eu-west -l jurisdiction=EU",
        cut_hint="site show NAME has one site whole, --json every field",
    )
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
        table(
            "fleet-wide", [Col("MODEL", keep=True), "REQ/S", "ERRORS", "P50", "P95", "P99"], fleet
        )


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
        warnings.extend(
            f"site {site.name}: {line}"
            for line in storage_lines(site.storage)
            if line.startswith("disk full")
        )
    return warnings


def anomaly_lines(hc: HubClient) -> list[str]:
    """Open anomalies per site, one line each (``modelfleet anomalies`` has them whole);
    nothing when the hub has no anomaly endpoint (an older hub)."""
    try:
        found = hc.anomalies(open_only=True)["anomalies"]
    except ModelfleetError:
        return []
    per_site: dict[str, list[str]] = {}
    for a in found:
        per_site.setdefault(a["site"], []).append(f"{a['model']}/{a['metric']}")
    return [
        f"open anomalies at {site}: {len(metrics)} ({', '.join(sorted(set(metrics))[:4])}"
        f"{', ...' if len(set(metrics)) > 4 else ''}) -> modelfleet anomalies --site {site}"
        for site, metrics in sorted(per_site.items())
    ]


def accuracy_lines(hc: HubClient, doc: dict[str, Any]) -> list[str]:
    """Per site x model with labels (docs/feedback.md), the newest labelled version's
    figure over the last 7 days: ``site-a: m accuracy 0.93 (412 labels, v3)``; nothing
    when the hub has no accuracy endpoint (an older hub)."""
    names = sorted({m["model"] for site in doc["sites"] for m in site["models"]})
    lines: list[str] = []
    for name in names:
        try:
            figures = hc.request("GET", "/api/v1/accuracy", params={"model": name}).json()
        except ModelfleetError:
            return lines
        newest: dict[str, dict[str, Any]] = {}
        for f in figures.get("figures", []):
            if f.get("count") and f["version"] >= newest.get(f["site"], {}).get("version", 0):
                newest[f["site"]] = f
        for site, f in sorted(newest.items()):
            value = f"{f['value']:.2f}" if f["metric"] == "accuracy" else f"{f['value']:.4g}"
            lines.append(
                f"{site}: {name} {f['metric']} {value} ({f['count']} labels, v{f['version']})"
            )
    return lines


def _warn(hc: HubClient) -> None:
    """On stderr, so ``--json`` output stays the document alone."""
    for line in fleet_warnings(hc):
        warn(line)


def status(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[
        float, typer.Option(help="Seconds between refreshes.", min=0.2, max=3600)
    ] = 2.0,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Every site at a glance: online, last seen, models, requests/s, errors, p99, drift, drops.

    An offline site says how long ago it last reported; DROPPED counts telemetry windows (w) and
    requests (r) a site could not deliver. The table fits 100 columns; `site show NAME`
    has one site whole and --json every field (total requests too).

    \b
    Examples:
      modelfleet status
      modelfleet status --watch --interval 5
    """
    with client(hub, token) as hc:
        if not watch:
            doc = hc.get_telemetry_status()
            _warn(hc)
            if json_out:
                print_json(doc)
            else:
                _render(jsonable(doc))
                for line in anomaly_lines(hc) + accuracy_lines(hc, jsonable(doc)):
                    say(line)
            return
        while True:
            doc = hc.get_telemetry_status()
            if json_out:
                print_json(doc)
            else:
                console.clear()
                _render(jsonable(doc))
                for line in anomaly_lines(hc) + accuracy_lines(hc, jsonable(doc)):
                    say(line)
            _warn(hc)
            time.sleep(interval)
