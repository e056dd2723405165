"""``modelfleet drift MODEL[:V]``: per-feature drift with the statistic and its threshold."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from modelfleet.cli.common import (
    DEFAULT_HUB,
    HubOpt,
    JsonOpt,
    TokenOpt,
    client,
    console,
    jsonable,
    print_json,
    table,
)
from modelfleet.errors import InvalidInput
from modelfleet.refs import parse_ref


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def _verdict(value: bool | None) -> str:
    return {True: "DRIFT", False: "ok", None: "n/a"}[value]


def _parse_settings(items: list[str]) -> dict[str, float]:
    values: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            values[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise InvalidInput(f"invalid --set {item!r}: expected NAME=NUMBER, e.g. psi=0.2")
    return values


def _render(doc: dict[str, Any]) -> None:
    t = doc["thresholds"]
    console.print(
        f"thresholds: psi >= {t['psi']:g}, ks p-value < {t['ks_pvalue']:g}, "
        f"js >= {t['js']:g}, min samples {t['min_samples']:g}, window {t['window_s']:g} s",
        highlight=False,
    )
    if not doc["results"]:
        console.print("no telemetry for this model in the drift window")
    for result in doc["results"]:
        title = (
            f"{result['site']}  {result['model']}:{result['version']}  "
            f"{result['windows']} windows, {result['requests']} requests  "
            f"-> {_verdict(result['drift'])}"
        )
        if not result["reference"]:
            console.print(f"{title}\n  no reference profile (model push --reference-data)")
            continue
        rows = [
            [
                f["feature"] + (f" ({f['label']})" if f["label"] else ""),
                f["role"],
                f["kind"],
                f["current_n"],
                _num(f["psi"]),
                _num(f["ks"]),
                _num(f["ks_pvalue"], ".2g"),
                _num(f["js"]),
                _verdict(f["drift"]),
            ]
            for f in result["features"]
        ]
        columns = ["FEATURE", "ROLE", "KIND", "SAMPLES", "PSI", "KS D", "KS P", "JS", "VERDICT"]
        table(title, columns, rows)


def drift(
    ref: Annotated[str, typer.Argument(help="MODEL or MODEL:V.", show_default=False)],
    site: Annotated[str | None, typer.Option("--site", "-s", help="Only this site.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a threshold for this model first, e.g. --set psi=0.2 "
            "(psi, ks_pvalue, js, min_samples, window_s).",
        ),
    ] = None,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Per-feature drift of a model per site and version, against its reference profile."""
    parsed = parse_ref(ref)
    if parsed.alias is not None:
        raise InvalidInput("use MODEL or MODEL:V (resolve an alias with `model show`)")
    with client(hub, token) as hc:
        if set_:
            hc.set_drift_thresholds(parsed.name, _parse_settings(set_))
        doc = hc.get_drift(parsed.name, version=parsed.version, site=site)
    if json_out:
        print_json(doc)
        return
    _render(jsonable(doc))
