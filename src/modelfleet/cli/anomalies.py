"""``modelfleet anomalies``: what the hub's anomaly detector found per site x model."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

import typer
from pydantic import TypeAdapter

from modelfleet.cli.common import (
    DEFAULT_HUB,
    Col,
    HubOpt,
    JsonOpt,
    TokenOpt,
    client,
    jsonable,
    print_json,
    say,
    table,
)
from modelfleet.errors import InvalidInput

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_TIME = TypeAdapter(datetime)  # the listing's timestamps, parsed for display
#: The hub's bounds of ``since_s`` (hub/anomalies.py): one minute to seven days.
MIN_SINCE_S, MAX_SINCE_S = 60.0, 7 * 86_400.0


def parse_since(text: str) -> float:
    """``90s``, ``30m``, ``1h``, ``7d`` (or plain seconds) -> seconds, within the hub's bounds."""
    found = _DURATION.match(text)
    if found is None:
        raise InvalidInput(f"invalid --since {text!r}: expected e.g. 30m, 1h, 2d")
    seconds = float(found.group(1)) * _UNITS[found.group(2) or "s"]
    if not MIN_SINCE_S <= seconds <= MAX_SINCE_S:
        raise InvalidInput(f"invalid --since {text!r}: must be between 1m and 7d")
    return seconds


def parse_settings(items: list[str]) -> dict[str, float]:
    """``NAME=NUMBER`` pairs (the hub checks names and bounds)."""
    values: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise InvalidInput(f"invalid --set {item!r}: expected NAME=NUMBER, e.g. sensitivity=5")
        values[key.strip()] = int(number) if number.is_integer() else number
    return values


def _num(value: float, metric: str) -> str:
    if metric == "p99":
        return f"{value * 1000:.1f} ms"
    if metric in ("error_rate",) or metric.startswith("missing:"):
        return f"{value * 100:.2f}%"
    if metric == "request_rate":
        return f"{value:.2f}/s"
    return f"{value:.4g}"


def _rows(found: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            a["site"],
            f"{a['model']}:{a['version']}",
            a["metric"],
            a["severity"],
            f"{a['start']:%Y-%m-%d %H:%M}",
            "open" if a["end"] is None else f"{a['end']:%H:%M}",
            _num(a["observed"], a["metric"]),
            "-" if a["expected"] != a["expected"] else _num(a["expected"], a["metric"]),
            f"{a['score']:.1f}",
        ]
        for a in found
    ]


def anomalies(
    site: Annotated[str | None, typer.Option("--site", "-s", help="Only this site.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only this model.")] = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only anomalies still open.")] = False,
    since: Annotated[
        str, typer.Option(help="Also those that ended this long ago (1m to 7d).")
    ] = "1h",
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="NAME=NUMBER",
            help="With --model: change a detector setting first, e.g. --set sensitivity=5 "
            "(sensitivity, warmup, history, bucket_s, min_requests, stuck_windows, "
            "clear_buckets).",
        ),
    ] = None,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Anomalies in each site x model's telemetry: request rate, error rate, p99, output
    distribution, stuck inputs and bursts of missing values (docs/anomalies.md).

    EXPECTED is the baseline median; SCORE the robust z-score (a stuck input: run length over
    the model's stuck_windows). Sensitivity per model: PUT /api/v1/models/NAME/anomaly-settings.

    \b
    Examples:
      modelfleet anomalies --open
      modelfleet anomalies --site plant-eu-1 --since 6h
      modelfleet anomalies --model machine-health --json
      modelfleet anomalies --model machine-health --set sensitivity=5 --set bucket_s=120
    """
    since_s = parse_since(since)
    changes = parse_settings(set_ or [])
    if changes and model is None:
        raise InvalidInput("--set changes one model's settings: name it with --model")
    settings: dict[str, Any] | None = None
    with client(hub, token) as hc:
        if site is not None:
            hc.get_site(site)  # an unknown site is refused by name, not shown as "none"
        if model is not None:
            hc.get_model(model)
            if changes:
                settings = hc.set_anomaly_settings(model, changes)
            elif not json_out:
                settings = hc.get_anomaly_settings(model)
        doc = hc.anomalies(site=site, model=model, open_only=open_only, since_s=since_s)
    if json_out:
        print_json({**doc, "settings": settings} if settings is not None else doc)
        return
    if settings is not None:
        say(
            f"{model}: sensitivity z >= {settings['sensitivity']:g}, warm-up "
            f"{settings['warmup']}, history {settings['history']}, buckets "
            f"{settings['bucket_s']:g} s, min requests {settings['min_requests']}, stuck after "
            f"{settings['stuck_windows']} windows"
        )
    found = [
        {**a, "start": _TIME.validate_python(a["start"]),
         "end": None if a["end"] is None else _TIME.validate_python(a["end"])}
        for a in jsonable(doc["anomalies"])
    ]  # fmt: skip
    columns: list[str | Col] = [
        Col("SITE", keep=True), "MODEL", Col("METRIC", free=True), "SEVERITY", "START", "END",
        "OBSERVED", "EXPECTED", "SCORE",
    ]  # fmt: skip
    table(
        f"anomalies (open, and ended in the last {since})",
        columns,
        _rows(found),
        empty="no anomalies"
        if doc.get("passed_at", "") is not None
        else "no anomalies yet: the detector's first pass since the hub started is running",
    )
    if doc["truncated"]:
        say("more anomalies than shown: narrow with --site, --model or --since")
