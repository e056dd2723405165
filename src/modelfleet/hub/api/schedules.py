"""/api/v1/schedules and /api/v1/triggers: what starts a federated job or a retraining
hook by the clock or on a condition, and the record of each fire.

Reading needs ``models:read`` (a viewer); saving and removing need ``deployments:write``
(an operator: a schedule starts jobs that end in model versions and moves), audited. No
answer carries a hook's secret, except once the answer of the save that made it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from modelfleet.api.schedules import (
    Fire,
    Schedule,
    ScheduleIn,
    ScheduleSaved,
    Trigger,
    TriggerIn,
    TriggerSaved,
)
from modelfleet.hub.api.deps import Caller, Context, audited, require
from modelfleet.hub.auth import Permission

router = APIRouter(prefix="/api/v1", tags=["schedules"])

NamePath = Annotated[str, Path(min_length=1, max_length=64, description="Its name.")]
LimitQuery = Annotated[int, Query(ge=1, le=1000, description="At most this many, newest first.")]


# --- schedules -------------------------------------------------------------------------


@router.get("/schedules", response_model=list[Schedule], summary="Every schedule, by name")
def list_schedules(ctx: Context, caller: Caller) -> list[Schedule]:
    caller.require(Permission.MODELS_READ)
    return ctx.schedules.list_schedules()


@router.get("/schedules/{name}", response_model=Schedule, summary="A schedule")
def get_schedule(name: NamePath, ctx: Context, caller: Caller) -> Schedule:
    caller.require(Permission.MODELS_READ)
    return ctx.schedules.get(name)


@router.put(
    "/schedules/{name}",
    response_model=ScheduleSaved,
    summary="Create or replace a schedule (a hook's new secret is shown once)",
)
async def put_schedule(
    name: NamePath, body: ScheduleIn, ctx: Context, caller: Caller
) -> ScheduleSaved:
    require(ctx, caller, Permission.DEPLOY_WRITE, "schedule.save", name)
    with audited(ctx, caller, "schedule.save", name) as detail:
        saved = await run_in_threadpool(ctx.schedules.save, name, body, caller.actor)
        detail.append(f"cron {saved.cron!r} {saved.timezone} action {body.action.kind}")
    return saved


@router.delete("/schedules/{name}", status_code=204, summary="Remove a schedule and its fires")
def remove_schedule(name: NamePath, ctx: Context, caller: Caller) -> Response:
    require(ctx, caller, Permission.DEPLOY_WRITE, "schedule.remove", name)
    with audited(ctx, caller, "schedule.remove", name):
        ctx.schedules.remove(name)
    return Response(status_code=204)


@router.get(
    "/schedules/{name}/fires",
    response_model=list[Fire],
    summary="A schedule's slots: fired, failed, missed or interrupted, newest first",
)
def schedule_fires(
    name: NamePath, ctx: Context, caller: Caller, limit: LimitQuery = 100
) -> list[Fire]:
    caller.require(Permission.MODELS_READ)
    return ctx.schedules.fires(name, limit)


# --- triggers --------------------------------------------------------------------------


@router.get("/triggers", response_model=list[Trigger], summary="Every trigger, by name")
def list_triggers(ctx: Context, caller: Caller) -> list[Trigger]:
    caller.require(Permission.MODELS_READ)
    return ctx.triggers.list_triggers()


@router.get("/triggers/{name}", response_model=Trigger, summary="A trigger")
def get_trigger(name: NamePath, ctx: Context, caller: Caller) -> Trigger:
    caller.require(Permission.MODELS_READ)
    return ctx.triggers.get(name)


@router.put(
    "/triggers/{name}",
    response_model=TriggerSaved,
    summary="Create or replace a trigger (a hook's new secret is shown once)",
)
async def put_trigger(
    name: NamePath, body: TriggerIn, ctx: Context, caller: Caller
) -> TriggerSaved:
    require(ctx, caller, Permission.DEPLOY_WRITE, "trigger.save", name)
    with audited(ctx, caller, "trigger.save", name) as detail:
        saved = await run_in_threadpool(ctx.triggers.save, name, body, caller.actor)
        detail.append(
            f"when {body.condition.kind} on {body.condition.model} action {body.action.kind}"
        )
    return saved


@router.delete("/triggers/{name}", status_code=204, summary="Remove a trigger and its fires")
def remove_trigger(name: NamePath, ctx: Context, caller: Caller) -> Response:
    require(ctx, caller, Permission.DEPLOY_WRITE, "trigger.remove", name)
    with audited(ctx, caller, "trigger.remove", name):
        ctx.triggers.remove(name)
    return Response(status_code=204)


@router.get(
    "/triggers/{name}/fires",
    response_model=list[Fire],
    summary="A trigger's fires and their outcomes, newest first",
)
def trigger_fires(
    name: NamePath, ctx: Context, caller: Caller, limit: LimitQuery = 100
) -> list[Fire]:
    caller.require(Permission.MODELS_READ)
    return ctx.triggers.fires(name, limit)
