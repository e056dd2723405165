"""/api/v1/pipelines: the closed loop (train -> evaluate -> promote) and its runs.

Reading needs ``models:read`` (a viewer); saving, removing and starting a run need
``deployments:write`` (an operator: a run ends in an alias move a following deployment
rolls out), audited.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from modelfleet.api.pipelines import Pipeline, PipelineIn, PipelineRun
from modelfleet.hub.api.deps import Caller, Context, audited, require
from modelfleet.hub.auth import Permission

router = APIRouter(prefix="/api/v1", tags=["pipelines"])

NamePath = Annotated[str, Path(min_length=1, max_length=64, description="Its name.")]
RunPath = Annotated[str, Path(min_length=1, max_length=64, description="The run's id.")]
LimitQuery = Annotated[int, Query(ge=1, le=1000, description="At most this many, newest first.")]


@router.get("/pipelines", response_model=list[Pipeline], summary="Every pipeline, by name")
def list_pipelines(ctx: Context, caller: Caller) -> list[Pipeline]:
    caller.require(Permission.MODELS_READ)
    return ctx.pipelines.list_pipelines()


@router.get("/pipelines/{name}", response_model=Pipeline, summary="A pipeline and its last run")
def get_pipeline(name: NamePath, ctx: Context, caller: Caller) -> Pipeline:
    caller.require(Permission.MODELS_READ)
    return ctx.pipelines.get(name)


@router.put("/pipelines/{name}", response_model=Pipeline, summary="Create or replace a pipeline")
async def put_pipeline(name: NamePath, body: PipelineIn, ctx: Context, caller: Caller) -> Pipeline:
    require(ctx, caller, Permission.DEPLOY_WRITE, "pipeline.save", name)
    with audited(ctx, caller, "pipeline.save", name) as detail:
        saved = await run_in_threadpool(ctx.pipelines.save, name, body, caller.actor)
        detail.append(f"model {saved.model} {saved.candidate_alias} -> {saved.promote_alias}")
    return saved


@router.delete("/pipelines/{name}", status_code=204, summary="Remove a pipeline and its runs")
def remove_pipeline(name: NamePath, ctx: Context, caller: Caller) -> Response:
    require(ctx, caller, Permission.DEPLOY_WRITE, "pipeline.remove", name)
    with audited(ctx, caller, "pipeline.remove", name):
        ctx.pipelines.remove(name)
    return Response(status_code=204)


@router.post(
    "/pipelines/{name}/runs",
    status_code=201,
    response_model=PipelineRun,
    summary="Start a run now (its federated job starts at once)",
)
async def start_run(name: NamePath, ctx: Context, caller: Caller) -> PipelineRun:
    require(ctx, caller, Permission.DEPLOY_WRITE, "pipeline.run", name)
    with audited(ctx, caller, "pipeline.run", name) as detail:
        run = await run_in_threadpool(ctx.pipelines.start_run, name, actor=caller.actor)
        detail.append(f"run {run.id}")
    return run


@router.get(
    "/pipelines/{name}/runs", response_model=list[PipelineRun], summary="Its runs, newest first"
)
def list_runs(
    name: NamePath, ctx: Context, caller: Caller, limit: LimitQuery = 100
) -> list[PipelineRun]:
    caller.require(Permission.MODELS_READ)
    return ctx.pipelines.runs(name, limit=limit)


@router.get("/pipelines/{name}/runs/{run_id}", response_model=PipelineRun, summary="One run")
def get_run(name: NamePath, run_id: RunPath, ctx: Context, caller: Caller) -> PipelineRun:
    caller.require(Permission.MODELS_READ)
    return ctx.pipelines.get_run(name, run_id)
