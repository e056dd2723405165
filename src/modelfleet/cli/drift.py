"""``modelfleet drift MODEL[:V]``: per-feature drift with the statistic and its threshold."""

from __future__ import annotations

from typing import Annotated, Any

import typer

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


#: Drifted features first, then those without a verdict (too few samples), then the rest.
_VERDICT_ORDER = {True: 0, None: 1, False: 2}


def _statistic(feature: dict[str, Any]) -> float:
    """The figure a feature is judged on: PSI for numbers, JS for categories, else KS D."""
    for key in ("psi", "js", "ks"):
        if feature.get(key) is not None:
            return float(feature[key])
    return 0.0


def _ordered(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The features worth a look first: drifted ones, each group by statistic, largest first."""
    return sorted(features, key=lambda f: (_VERDICT_ORDER[f["drift"]], -_statistic(f)))


def _render(doc: dict[str, Any]) -> None:
    t = doc["thresholds"]
    say(
        f"thresholds: psi >= {t['psi']:g}, ks p-value < {t['ks_pvalue']:g}, "
        f"js >= {t['js']:g}, min samples {t['min_samples']:g}, window {t['window_s']:g} s"
    )
    if not doc["results"]:
        say(
            "no telemetry for this model in the drift window: sites report it once the "
            "model has served requests (modelfleet status)"
        )
    for index, result in enumerate(doc["results"]):
        if index:
            say("")  # a blank line between sites
        title = (
            f"{result['site']}  {result['model']}:{result['version']}  "
            f"{result['windows']} windows, {result['requests']} requests  "
            f"-> {_verdict(result['drift'])}"
        )
        if not result["reference"]:
            say(f"{title}\n  no reference profile (model push --reference-data)")
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
            for f in _ordered(result["features"])
        ]
        columns: list[str | Col] = [
            Col("FEATURE", free=True), "ROLE", "KIND", "SAMPLES", "PSI", "KS D", "KS P", "JS",
            "VERDICT",
        ]  # fmt: skip
        say(title)  # a line of its own: a table title would wrap to the table's width
        table(None, columns, rows)


def drift(
    ref: Annotated[
        str, typer.Argument(metavar="MODEL", help="NAME, NAME:V or NAME@ALIAS.", show_default=False)
    ],
    site: Annotated[str | None, typer.Option("--site", "-s", help="Only this site.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="NAME=NUMBER",
            help="Override a threshold for this model first, e.g. --set psi=0.2 "
            "(psi, ks_pvalue, js, min_samples, window_s).",
        ),
    ] = None,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Per-feature drift of a model per site and version, against its reference profile.

    Features are listed drifted first, each group by its statistic (PSI, else JS), largest
    first. An alias resolves to the version it points at now.

    \b
    Examples:
      modelfleet drift machine-health@production --site plant-eu-1
      modelfleet drift machine-health:3 --set psi=0.25
    """
    parsed = parse_ref(ref)
    settings = _parse_settings(set_ or [])
    with client(hub, token) as hc:
        name, version = parsed.name, parsed.version
        if parsed.alias is not None or parsed.version is not None:
            resolved = hc.resolve(ref)  # an alias names the version it points at now
            name, version = resolved.model, resolved.version
        else:
            hc.get_model(name)  # an unknown model is refused by name, not shown as "no data"
        if site is not None:
            hc.get_site(site)  # an unknown site is refused by name, not shown as "no data"
        if settings:
            hc.set_drift_thresholds(name, settings)
        doc = hc.get_drift(name, version=version, site=site)
    if json_out:
        print_json(doc)
        return
    _render(jsonable(doc))
