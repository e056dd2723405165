"""The federated pages: every job (JSON twin ``/api/v1/federation/jobs``) and one job's
rounds (JSON twin ``/api/v1/federation/jobs/{id}``): who was asked, who answered, who
refused and why, each site's reported loss and accuracy per round, the registered result
and the per-site variants.

Everything is the coordinator's own view of the job (:meth:`Coordinator.view`, what the
API answers). Per-site metrics are those the sites put in their updates (the built-in
trainer reports ``eval_loss`` and ``eval_accuracy`` of the round's global model on local
held-out data before training, and ``train_loss`` of its last local epoch); they are kept
after a round closes, the deltas are not. An attempt of a round that failed and was
retried keeps only its outcome: its answers are replaced by the next attempt's.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse

from modelfleet.errors import ModelfleetError
from modelfleet.hub.dashboard.render import UiContext, UiSession, render

router = APIRouter(include_in_schema=False)

JobId = Annotated[str, Path(min_length=1, max_length=128)]
STATE_BADGES = {
    "running": "warn",
    "finalizing": "warn",
    "completed": "ok",
    "failed": "bad",
    "aborted": "bad",
}
#: Metrics drawn first, in this order, when sites report them; others follow by name.
KNOWN_METRICS = ("eval_loss", "eval_accuracy", "train_loss")
MAX_CHARTS = 8


def _progress(view: dict[str, Any]) -> dict[str, Any]:
    """Training rounds done of those planned; a personalization round (after the last
    training round, when the job fine-tunes per site) is counted apart."""
    done, planned = int(view["round"] or 0), int(view["rounds"] or 0)
    personalizes = bool((view["config"] or {}).get("personalize_epochs"))
    return {
        "rounds_done": min(done, planned),
        "personalization": ("done" if done > planned else "pending") if personalizes else None,
    }


def _eligible(sites: Any) -> tuple[int, int]:
    if not isinstance(sites, dict):
        return 0, 0
    return sum(1 for s in sites.values() if s.get("status") == "eligible"), len(sites)


@router.get("/ui/federated")
def federated_page(request: Request, ctx: UiContext, signed_in: UiSession) -> HTMLResponse:
    coordinator = ctx.federation
    jobs = []
    for job in reversed(coordinator.jobs()):  # newest first
        view = coordinator.view(job, rounds=False)
        eligible, matched = _eligible(view["sites"])
        jobs.append({**view, **_progress(view), "eligible": eligible, "matched": matched})
    return render(
        request,
        "federated.html",
        signed_in,
        title="Federated jobs",
        json_twin="/api/v1/federation/jobs",
        jobs=jobs,
        badges=STATE_BADGES,
    )


def _participation(view: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Sites (columns) and per round, each site's part: update, refusal, no answer, not
    asked."""
    sites: set[str] = set(view["sites"] or {})
    rows = []
    for rnd in view["round_details"]:
        sites.update(rnd["selected"])
        answers = {u["site"]: u for u in rnd["updates"]}
        cells: dict[str, dict[str, Any]] = {}
        for site in rnd["selected"]:
            answer = answers.get(site)
            if answer is None:
                late = rnd["state"] != "open"
                cells[site] = {
                    "part": "straggler" if late else "waiting",
                    "text": "no answer" if late else "asked, working",
                    "badge": "warn" if late else "neutral",
                }
            elif answer["kind"] == "refusal":
                reason = answer["reason"] or "no reason given"
                cells[site] = {"part": "refused", "text": reason, "badge": "bad"}
            else:
                cells[site] = {
                    "part": "update",
                    "text": f"{answer['num_examples']:,} examples",
                    "badge": "ok",
                }
        answered = sum(1 for u in rnd["updates"] if u["kind"] == "update")
        rows.append({**rnd, "cells": cells, "answered": answered})
    return sorted(sites), rows


def _metric_charts(view: dict[str, Any], sites: list[str]) -> list[dict[str, Any]]:
    """One chart per metric the sites reported: x = round, one series per site."""
    rounds = [r["round"] for r in view["round_details"]]
    reported: dict[str, dict[str, dict[int, float]]] = {}
    for rnd in view["round_details"]:
        for update in rnd["updates"]:
            for key, value in (update.get("metrics") or {}).items():
                reported.setdefault(key, {}).setdefault(update["site"], {})[rnd["round"]] = value
    names = [m for m in KNOWN_METRICS if m in reported]
    names += sorted(m for m in reported if m not in KNOWN_METRICS)
    charts = []
    for index, name in enumerate(names[:MAX_CHARTS]):
        by_site = reported[name]
        series: list[dict[str, Any]] = [
            {"label": site, "values": [by_site[site].get(r) for r in rounds]}
            for site in sites
            if site in by_site
        ]
        overall = [_number(r["metrics"].get(name)) for r in view["round_details"]]
        if any(v is not None for v in overall):  # the strategy's example-weighted mean
            series.append(
                {"label": "all sites (weighted)", "values": overall, "color": "#1d2430",
                 "dash": [6, 4]}
            )  # fmt: skip
        charts.append(
            {
                "id": f"fl-metric-{index}",
                "name": name,
                "doc": {
                    "x": rounds,
                    "series": series,
                    "xlabel": "round",
                    "ylabel": name,
                    "integer_x": True,
                    "height": 200,
                },
            }
        )
    return charts


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@router.get("/ui/federated/{job_id}")
def federated_job_page(
    request: Request, ctx: UiContext, signed_in: UiSession, job_id: JobId
) -> HTMLResponse:
    coordinator = ctx.federation
    twin = f"/api/v1/federation/jobs/{quote(job_id, safe='')}"
    try:
        job = coordinator.job(job_id)
    except ModelfleetError as exc:
        return render(
            request, "federated_job.html", signed_in, title=f"Federated job {job_id}",
            json_twin=None, status_code=exc.status, error=exc.message, job=None,
        )  # fmt: skip
    view = coordinator.view(job)
    config = view["config"]
    sites, rounds = _participation(view)
    return render(
        request,
        "federated_job.html",
        signed_in,
        title=f"Federated job {job.id}",
        json_twin=twin,
        error="",
        job={**view, **_progress(view)},
        badges=STATE_BADGES,
        sites=sites,
        rounds=rounds,
        charts=_metric_charts(view, sites),
        result_model=config.get("result_model") or view["model"],
        variants=sorted((view.get("variants") or {}).items()),
        left_out=sorted(
            (name, info)
            for name, info in (view["sites"] or {}).items()
            if info.get("status") != "eligible"
        ),
    )
