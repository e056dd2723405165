"""/api/v1/deployments, /overrides, /policies, /rollouts, /apply and /controller."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from modelfleet.api import ApplyResult as ApplyAnswer
from modelfleet.api import (
    ControllerStatus,
    Deployment,
    DeployResult,
    Override,
    Plan,
    Policy,
    PolicyChanges,
    Rollout,
)
from modelfleet.hub.api.deps import Caller, Context, audited, require
from modelfleet.hub.auth import Permission
from modelfleet.hub.deployments import DeployRequest
from modelfleet.hub.gitops import ApplyResult, FleetApplier
from modelfleet.hub.policy import parse_policy_document

router = APIRouter(prefix="/api/v1", tags=["deployments"])


class OverrideIn(BaseModel):
    site: str
    ref: str = Field(description="NAME:V or NAME@ALIAS (resolved now).")
    reason: str = ""


class PoliciesIn(BaseModel):
    policies: list[dict[str, Any]]
    prune: bool = Field(default=False, description="Remove policies not in the document.")


class ApplyIn(BaseModel):
    doc: dict[str, Any]
    prune: bool = False
    dry_run: bool = False


# --- deployments ---------------------------------------------------------------------------


@router.post(
    "/deployments/plan", response_model=Plan, summary="What a deployment would do (changes nothing)"
)
def plan(body: DeployRequest, ctx: Context, caller: Caller) -> dict[str, Any]:
    caller.require(Permission.SITES_READ)
    return ctx.deployments.plan(body).as_dict()


@router.post(
    "/deployments",
    response_model=DeployResult,
    status_code=201,
    summary="Create or update a deployment",
)
def deploy(body: DeployRequest, ctx: Context, caller: Caller) -> dict[str, Any]:
    obj = body.name or body.ref
    require(ctx, caller, Permission.DEPLOY_WRITE, "deploy", obj)
    service = ctx.deployments
    with audited(ctx, caller, "deploy", obj) as detail:
        record, rollout, planned = service.deploy(body, caller.actor)
        detail.append(f"{record.model}:{record.target_version} to {record.selector or 'all'}")
        if rollout is not None:
            detail.append(f"rollout {rollout.id} ({len(rollout.waves)} waves)")
    return {
        "deployment": service.view(record),
        "rollout": ctx.rollouts.view(rollout) if rollout else None,
        "plan": planned.as_dict(),
    }


@router.get("/deployments", response_model=list[Deployment], summary="All deployments")
def list_deployments(ctx: Context, caller: Caller) -> list[dict[str, Any]]:
    caller.require(Permission.SITES_READ)
    service = ctx.deployments
    return [service.view(d) for d in service.list()]


@router.get("/deployments/{name}", response_model=Deployment, summary="One deployment")
def show_deployment(name: str, ctx: Context, caller: Caller) -> dict[str, Any]:
    caller.require(Permission.SITES_READ)
    service = ctx.deployments
    return service.view(service.get(name))


@router.delete("/deployments/{name}", status_code=204, summary="Remove a deployment")
def remove_deployment(name: str, ctx: Context, caller: Caller) -> Response:
    require(ctx, caller, Permission.DEPLOY_WRITE, "deployment.remove", name)
    with audited(ctx, caller, "deployment.remove", name):
        ctx.deployments.remove(name)
    return Response(status_code=204)


# --- overrides -------------------------------------------------------------------------------


@router.get("/overrides", response_model=list[Override], summary="Per-site version pins")
def list_overrides(ctx: Context, caller: Caller) -> list[dict[str, Any]]:
    caller.require(Permission.SITES_READ)
    return [o.__dict__ for o in ctx.deployments.overrides()]


@router.put(
    "/overrides", response_model=Override, summary="Pin a site to a version (wins over deployments)"
)
def pin(body: OverrideIn, ctx: Context, caller: Caller) -> dict[str, Any]:
    obj = f"{body.site}/{body.ref}"
    require(ctx, caller, Permission.DEPLOY_WRITE, "site.pin", obj)
    with audited(ctx, caller, "site.pin", obj):
        record = ctx.deployments.pin(body.site, body.ref, body.reason)
    return record.__dict__


@router.delete("/overrides/{site}/{model}", status_code=204, summary="Remove a pin")
def unpin(site: str, model: str, ctx: Context, caller: Caller) -> Response:
    require(ctx, caller, Permission.DEPLOY_WRITE, "site.unpin", f"{site}/{model}")
    with audited(ctx, caller, "site.unpin", f"{site}/{model}"):
        ctx.deployments.unpin(site, model)
    return Response(status_code=204)


# --- policies --------------------------------------------------------------------------------


@router.get("/policies", response_model=list[Policy], summary="Residency and spread rules")
def list_policies(ctx: Context, caller: Caller) -> list[dict[str, Any]]:
    caller.require(Permission.SITES_READ)
    return [
        {"name": p.name, "kind": p.kind, **p.spec, "updated_at": p.updated_at}
        for p in ctx.deployments.policies()
    ]


@router.put(
    "/policies",
    response_model=PolicyChanges,
    summary="Apply a policy document (create or update each rule)",
)
def apply_policies(body: PoliciesIn, ctx: Context, caller: Caller) -> dict[str, Any]:
    require(ctx, caller, Permission.DEPLOY_WRITE, "policy.apply", "policies")
    service = ctx.deployments
    rules = parse_policy_document({"policies": body.policies})
    changes = []
    for rule in rules:
        with audited(ctx, caller, "policy.apply", rule.name) as detail:
            _, changed = service.put_policy(rule.name, rule.kind, rule.spec())
            detail.append("changed" if changed else "unchanged")
        if changed:
            changes.append({"policy": rule.name, "action": "apply"})
    if body.prune:
        keep = {r.name for r in rules}
        for old in service.policies():
            if old.name not in keep:
                with audited(ctx, caller, "policy.remove", old.name):
                    service.remove_policy(old.name)
                changes.append({"policy": old.name, "action": "delete"})
    return {"changed": bool(changes), "changes": changes}


@router.delete("/policies/{name}", status_code=204, summary="Remove a policy")
def remove_policy(name: str, ctx: Context, caller: Caller) -> Response:
    require(ctx, caller, Permission.DEPLOY_WRITE, "policy.remove", name)
    with audited(ctx, caller, "policy.remove", name):
        ctx.deployments.remove_policy(name)
    return Response(status_code=204)


# --- rollouts --------------------------------------------------------------------------------


@router.get("/rollouts", response_model=list[Rollout], summary="Rollouts, newest first")
def list_rollouts(
    ctx: Context,
    caller: Caller,
    state: Annotated[str | None, Query(description="Only rollouts in this state.")] = None,
) -> list[dict[str, Any]]:
    caller.require(Permission.SITES_READ)
    controller = ctx.rollouts
    states = (state,) if state else None
    return [controller.view(r) for r in controller.list(states)]


@router.get(
    "/rollouts/{rollout_id}", response_model=Rollout, summary="One rollout with per-wave progress"
)
def show_rollout(rollout_id: str, ctx: Context, caller: Caller) -> dict[str, Any]:
    caller.require(Permission.SITES_READ)
    controller = ctx.rollouts
    return controller.view(controller.get(rollout_id))


@router.post(
    "/rollouts/{rollout_id}/{action}",
    response_model=Rollout,
    summary="pause | resume | promote | abort | rollback | approve",
)
async def act(rollout_id: str, action: str, ctx: Context, caller: Caller) -> dict[str, Any]:
    require(ctx, caller, Permission.DEPLOY_WRITE, f"rollout.{action}", rollout_id)
    controller = ctx.rollouts
    with audited(ctx, caller, f"rollout.{action}", rollout_id) as detail:
        moved = await run_in_threadpool(controller.act, rollout_id, action, caller.actor)
        detail.append(f"now {moved.state} at wave {moved.step + 1}")
    return await run_in_threadpool(controller.view, moved)


@router.get(
    "/controller",
    response_model=ControllerStatus,
    summary="Whether this hub process runs the rollout controller",
)
def controller_status(ctx: Context, caller: Caller) -> dict[str, Any]:
    caller.require(Permission.SITES_READ)
    return ctx.rollouts.status()


# --- gitops ----------------------------------------------------------------------------------


@router.post(
    "/apply",
    response_model=ApplyAnswer,
    response_model_exclude_unset=True,  # a change lists only the fields it has
    summary="Apply a fleet file: sites, policies, overrides, deployments",
)
def apply(body: ApplyIn, ctx: Context, caller: Caller) -> dict[str, Any]:
    require(ctx, caller, Permission.DEPLOY_WRITE, "apply", "fleet")
    require(ctx, caller, Permission.SITES_WRITE, "apply", "fleet")
    applier = FleetApplier(
        ctx.sites, ctx.deployments, pipelines=ctx.pipelines, schedules=ctx.schedules
    )
    result = ApplyResult(body.dry_run)
    try:
        with audited(ctx, caller, "apply", "fleet") as detail:
            applier.apply(
                body.doc, prune=body.prune, dry_run=body.dry_run, actor=caller.actor, into=result
            )
            detail.append(f"{len(result.changes)} change(s){' (dry run)' if body.dry_run else ''}")
    finally:
        # Every change that was made is audited, also when a later one failed.
        if not body.dry_run:
            for change in result.changes:
                ctx.store.audit.record(
                    actor=caller.actor,
                    action=f"apply.{change.kind}.{change.action}",
                    object=change.name,
                    outcome="ok",
                    detail=change.detail,
                )
            for site in {c.name for c in result.changes if c.kind == "site"}:
                ctx.notifier.notify(site)
    return result.as_dict()
