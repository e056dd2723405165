"""The drift pages: a site x feature heat map of one statistic against its threshold
(JSON twin: ``/api/v1/telemetry/drift/{model}``), and one feature's reference vs current
distribution at one site, read from the sketches (JSON twin:
``/api/v1/telemetry/drift/{model}/features/{feature}?site=``).

Every figure comes from the same services the API calls: the heat map from
:meth:`Telemetry.drift`, the feature page from
:func:`modelfleet.hub.api.distributions.feature_distribution`.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from modelfleet.errors import InvalidInput, ModelfleetError
from modelfleet.hub.api.deps import MAX_NUMBER, VersionQuery
from modelfleet.hub.api.distributions import feature_distribution
from modelfleet.hub.dashboard.render import UiContext, UiSession, render
from modelfleet.monitoring.distributions import (
    CATEGORICAL_STATS,
    NUMERIC_STATS,
    STATS,
    heat_level,
    stat_ratio,
)

router = APIRouter(include_in_schema=False)

STAT_NAMES = {"psi": "PSI", "ks": "KS", "js": "JS distance"}
Name = Annotated[str | None, Query(max_length=255)]
StatQuery = Annotated[str, Query(max_length=16)]
#: The version picker's "every version" sends ``version=`` (empty): read as text.
VersionText = Annotated[str | None, Query(alias="version", max_length=12)]


def _version(text: str | None) -> int | None:
    """``None`` for absent or empty; InvalidInput for anything but a version number."""
    if text is None or not text.strip():
        return None
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_NUMBER:
        raise InvalidInput(f"version must be a number from 1 to {MAX_NUMBER}, not {text!r}")
    return int(text)


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.1e}"
    return f"{value:.3f}"


def _threshold_text(stat: str, thresholds: dict[str, float]) -> str:
    if stat == "ks":
        return f"p-value < {thresholds['ks_pvalue']:g}"
    return f">= {thresholds[stat]:g}"


def _cell(
    model: str,
    row: dict[str, Any],
    feature: dict[str, Any] | None,
    stat: str,
    thresholds: dict[str, float],
) -> dict[str, Any]:
    """One heat map cell: its figure, colour class, title and link."""
    name = feature["feature"] if feature else ""
    query = urlencode({"version": row["version"], "stat": stat})
    href = f"/ui/drift/{quote(model, safe='')}/{quote(row['site'], safe='')}/"
    cell: dict[str, Any] = {"feature": name, "drifted": False, "level": None, "text": "—"}
    if feature is None:
        return {**cell, "title": "no figure: the site sent nothing for this feature", "href": None}
    cell["href"] = href + quote(name, safe="") + "?" + query
    kind = feature["kind"]
    applies = NUMERIC_STATS if kind == "numeric" else CATEGORICAL_STATS
    limit = _threshold_text(stat, thresholds)
    reasons = "; ".join(feature.get("reasons") or [])
    cell["drifted"] = bool(feature.get("drift"))
    if stat not in applies:
        others = ", ".join(STAT_NAMES[s] for s in applies)
        title = f"{STAT_NAMES[stat]} does not exist for a {kind} feature ({others} does)"
        return {**cell, "title": title + (f"; drift: {reasons}" if reasons else "")}
    value = feature.get(stat)
    ratio = stat_ratio(stat, feature, thresholds)
    cell["level"] = heat_level(ratio)
    if value is None:
        why = reasons or "no figure yet"
        return {**cell, "title": f"{STAT_NAMES[stat]}: no figure ({why})"}
    if stat == "ks":
        p = feature.get("ks_pvalue")
        cell["text"] = f"{_fmt(value)}"
        title = f"KS D={_fmt(value)}, p-value {_fmt(p)}; threshold {limit}"
    else:
        cell["text"] = _fmt(value)
        title = f"{STAT_NAMES[stat]} {_fmt(value)}; threshold {limit}"
    if feature.get("drift") is None:
        title += f"; no verdict: {reasons or 'insufficient data'}"
    elif reasons:
        title += f"; drifted: {reasons}"
    else:
        title += "; within thresholds"
    return {**cell, "title": title}


def _heatmap(model: str, report: dict[str, Any], stat: str) -> dict[str, Any]:
    thresholds = report["thresholds"]
    labels: dict[str, str | None] = {}
    kinds: dict[str, str] = {}
    for result in report["results"]:
        for feature in result["features"]:
            labels.setdefault(feature["feature"], feature.get("label"))
            kinds.setdefault(feature["feature"], feature["kind"])
    columns = sorted(labels)
    rows = []
    for result in report["results"]:
        by_name = {f["feature"]: f for f in result["features"]}
        rows.append(
            {
                "site": result["site"],
                "version": result["version"],
                "requests": result["requests"],
                "windows": result["windows"],
                "reference": result["reference"],
                "drift": result["drift"],
                "drifted": result["drifted"],
                "cells": [_cell(model, result, by_name.get(c), stat, thresholds) for c in columns],
            }
        )
    return {
        "columns": [{"name": c, "label": labels[c], "kind": kinds[c]} for c in columns],
        "rows": rows,
    }


@router.get("/ui/drift")
def drift_page(
    request: Request,
    ctx: UiContext,
    signed_in: UiSession,
    model: Name = None,
    stat: StatQuery = "psi",
    version_text: VersionText = None,
) -> HTMLResponse:
    models = sorted({t.model for t in ctx.telemetry.repo.totals()})
    chosen = model or (models[0] if models else None)
    values: dict[str, Any] = {
        "models": models, "model": chosen, "stat": stat, "stats": STATS, "stat_names": STAT_NAMES,
        "version": None, "versions": [], "heatmap": None, "report": None, "error": "",
    }  # fmt: skip
    twin = f"/api/v1/telemetry/drift/{quote(chosen, safe='')}" if chosen else None
    status = 200
    try:
        if stat not in STATS:
            values["stat"] = "psi"
            raise InvalidInput(f"unknown statistic {stat!r}: choose one of {', '.join(STATS)}")
        version = values["version"] = _version(version_text)
        if chosen is not None:
            report = ctx.telemetry.drift(chosen, version)
            everything = report if version is None else ctx.telemetry.drift(chosen)
            values["report"] = report
            values["heatmap"] = _heatmap(chosen, report, stat)
            values["versions"] = sorted({r["version"] for r in everything["results"]})
            if version is not None:
                twin = f"{twin}?version={version}"
    except ModelfleetError as exc:
        values["error"] = exc.message
        status = exc.status
    return render(
        request, "drift.html", signed_in, title="Drift", json_twin=twin, status_code=status,
        **values,
    )  # fmt: skip


def _chart_docs(doc: dict[str, Any]) -> dict[str, Any]:
    """The feature page's charts as ``{x, series}`` documents for ``static/dashboard.js``."""
    if doc["kind"] != "numeric" or not doc.get("edges"):
        return {}
    series_cdf = []
    series_pmf = []
    edges = doc["edges"]
    for side, color in (("reference", "#4a5568"), ("current", "#2457c5")):
        if doc.get(f"{side}_cdf") is not None:
            series_cdf.append({"label": side, "values": doc[f"{side}_cdf"], "color": color})
        if doc.get(f"{side}_pmf") is not None:
            # one point per bin at its left edge, repeated at the right end for the step
            pmf = list(doc[f"{side}_pmf"])
            series_pmf.append({"label": side, "values": [*pmf, pmf[-1]], "color": color})
    return {
        "cdf": {"x": doc["cdf_x"], "series": series_cdf, "xlabel": doc["feature"],
                "ylabel": "P(X <= x)"},
        "pmf": {"x": edges if len(edges) > 1 else edges * 2, "series": series_pmf,
                "xlabel": doc["feature"], "ylabel": "share", "steps": True},
    }  # fmt: skip


@router.get("/ui/drift/{model}/{site}/{feature:path}")
def feature_page(
    request: Request,
    ctx: UiContext,
    signed_in: UiSession,
    model: str,
    site: str,
    feature: str,
    version: VersionQuery = None,
    stat: StatQuery = "psi",
) -> HTMLResponse:
    values: dict[str, Any] = {"model": model, "site": site, "feature": feature, "doc": None,
                              "charts": {}, "error": "", "stat": stat}  # fmt: skip
    status = 200
    twin = (
        f"/api/v1/telemetry/drift/{quote(model, safe='')}/features/{quote(feature, safe='')}?"
        + urlencode({"site": site, **({"version": version} if version else {})})
    )
    if stat not in STATS:
        values["stat"] = "psi"
    try:
        doc = feature_distribution(ctx, model, site, feature, version, values["stat"])
    except ModelfleetError as exc:
        values["error"] = exc.message
        status = exc.status
    else:
        values["doc"] = doc
        values["charts"] = _chart_docs(doc)
    return render(
        request, "drift_feature.html", signed_in, title=f"Drift · {feature} at {site}",
        json_twin=twin, status_code=status, **values,
    )  # fmt: skip
