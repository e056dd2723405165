"""The models pages: every model, and one model's versions with their lineage, where each
runs, its signature and the residency rules it meets (JSON twin: ``/api/v1/models/{name}``).

The policy verdicts are the ones ``deploy --plan`` shows: the same plan
(:meth:`Deployments.plan`) of deploying the version with the deployment's selector (every
site for a model never deployed), nothing written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from modelfleet.errors import ModelfleetError, NotFound
from modelfleet.hub.context import HubContext
from modelfleet.hub.dashboard.render import UiContext, UiSession, render
from modelfleet.hub.deployments import DeployRequest
from modelfleet.hub.store.records import VersionRecord

router = APIRouter(include_in_schema=False)

#: The newest versions one page lists, and how many of them get a policy verdict.
MAX_VERSIONS_SHOWN = 100
MAX_POLICY_VERSIONS = 10


@dataclass
class VersionRow:
    """One version as the page shows it."""

    record: VersionRecord
    aliases: list[str]
    children: list[int] = field(default_factory=list)
    variants: dict[str, int] = field(default_factory=dict)  # site -> personalized version
    active_at: list[str] = field(default_factory=list)  # sites serving it (reported)
    desired_at: list[str] = field(default_factory=list)  # sites assigned it (desired)
    policies: list[dict[str, Any]] | None = None  # None: not evaluated
    policy_error: str = ""


@router.get("/ui/models")
def models_page(request: Request, ctx: UiContext, signed_in: UiSession) -> HTMLResponse:
    models = ctx.store.models.list_models()
    return render(
        request,
        "models.html",
        signed_in,
        title="Models",
        json_twin="/api/v1/models",
        models=models,
    )


def _where(ctx: HubContext, name: str) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Per version: the sites reporting it active, and the sites assigned it."""
    active: dict[int, list[str]] = {}
    desired: dict[int, list[str]] = {}
    for site in ctx.sites.list():
        for model in ctx.sites.view(site)["models"]:
            if model["name"] != name:
                continue
            if model.get("active_version") is not None:
                active.setdefault(int(model["active_version"]), []).append(site.name)
            if model.get("assigned_version") is not None:
                desired.setdefault(int(model["assigned_version"]), []).append(site.name)
    return active, desired


def _policies(ctx: HubContext, row: VersionRow) -> None:
    ref = f"{row.record.model}:{row.record.version}"
    try:
        plan = ctx.deployments.plan(DeployRequest(ref=ref))
    except ModelfleetError as exc:
        row.policy_error = exc.message
        return
    row.policies = [dict(p.__dict__) for p in plan.policies]


def model_rows(ctx: HubContext, name: str) -> list[VersionRow]:
    """Newest first: every shown version with lineage, placement and policy verdicts."""
    model = ctx.registry.model(name)
    versions = ctx.registry.versions(name)
    active, desired = _where(ctx, name)
    rows = {
        v.version: VersionRow(v, sorted(a for a, n in model.aliases.items() if n == v.version))
        for v in versions
    }
    for v in versions:
        parent = rows.get(v.parent_version) if v.parent_version is not None else None
        if parent is None:
            continue
        site = v.tags.get("fl.site")
        if v.tags.get("fl.variant") and site:
            parent.variants[site] = v.version
        else:
            parent.children.append(v.version)
    shown = sorted(rows.values(), key=lambda r: -r.record.version)[:MAX_VERSIONS_SHOWN]
    for row in shown:
        row.active_at = sorted(active.get(row.record.version, []))
        row.desired_at = sorted(desired.get(row.record.version, []))
    wanted = [r for r in shown if r.active_at or r.desired_at or r is shown[0]]
    for row in wanted[:MAX_POLICY_VERSIONS]:
        _policies(ctx, row)
    return shown


@router.get("/ui/models/{name}")
def model_page(name: str, request: Request, ctx: UiContext, signed_in: UiSession) -> HTMLResponse:
    try:
        model = ctx.registry.model(name)
        rows = model_rows(ctx, name)
    except (NotFound, ModelfleetError) as exc:
        status = 404 if isinstance(exc, NotFound) else exc.status
        return render(
            request,
            "model.html",
            signed_in,
            title=f"Model {name}",
            status_code=status,
            error=exc.message if status != 404 else f"model {name!r} does not exist",
            model=None,
            rows=[],
        )
    deployments = [d for d in ctx.deployments.list() if d.model == model.name]
    return render(
        request,
        "model.html",
        signed_in,
        title=f"Model {model.name}",
        json_twin=f"/api/v1/models/{model.name}",
        error="",
        model=model,
        rows=rows,
        deployments=deployments,
        truncated=model.version_count > MAX_VERSIONS_SHOWN,
    )
