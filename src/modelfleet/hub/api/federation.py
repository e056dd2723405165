"""/api/v1/federation: federated jobs for operators; tasks and updates for sites.

Operators start, list, inspect and abort jobs. Sites dial out as everywhere else: they
declare their consent, long-poll their own tasks, fetch a round's weights and post an
update (a binary tensor envelope) or a refusal. A site credential only ever sees the tasks
and rounds it was selected for. Until a dedicated permission exists, starting and
aborting a job needs ``models:write`` (it ends in a new model version) and reading needs
``models:read``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from modelfleet.api import Consents, FederatedJob
from modelfleet.errors import ArtifactTooLarge, PermissionDenied
from modelfleet.federation import wire
from modelfleet.federation.jobs import JobConfig
from modelfleet.hub.api.deps import Caller, Context, RoundPath, audited, require, require_site
from modelfleet.hub.auth import Permission, Principal, Role
from modelfleet.hub.context import HubContext
from modelfleet.hub.federation.coordinator import Coordinator

T = TypeVar("T")
log = logging.getLogger("modelfleet.federation")

router = APIRouter(prefix="/api/v1/federation", tags=["federation"])

#: Threads for the per-round calls of sites (store reads and writes). A plain executor:
#: AnyIO's ``to_thread`` bookkeeping cost more than the work on this path.
_ROUND_IO = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fl-round-io")


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call of a site's round path off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(_ROUND_IO, fn, *args)


#: Largest update body accepted (a 64M-parameter float32 model and its header).
MAX_UPDATE_BYTES = 256 * 1024**2


class RefusalIn(BaseModel):
    attempt: int = Field(ge=1)
    reason: str = Field(max_length=2000)


class AbortIn(BaseModel):
    reason: str = Field(default="aborted by an operator", max_length=2000)


def _own_site(ctx: HubContext, caller: Principal, action: str, obj: str) -> str:
    if caller.role != Role.SITE or caller.site is None:
        ctx.store.audit.record(actor=caller.actor, action=action, object=obj, outcome="forbidden")
        raise PermissionDenied("only a site credential may post federated updates")
    return caller.site


# --- operators ------------------------------------------------------------------------


@router.post(
    "/jobs",
    response_model=FederatedJob,
    status_code=201,
    summary="Start a federated job (idempotent with an id)",
)
async def start_job(body: dict[str, Any], ctx: Context, caller: Caller) -> dict[str, Any]:
    coordinator = ctx.federation
    require(ctx, caller, Permission.MODELS_WRITE, "fl.start", str(body.get("model", "-")))
    with audited(ctx, caller, "fl.start", str(body.get("model", "-"))) as detail:
        config = JobConfig.parse(body)
        job = await run_in_threadpool(coordinator.start_job, config, caller.actor)
        detail.append(f"{job.id} {config.strategy} rounds={config.rounds} sites={config.sites}")
    return coordinator.view(job, rounds=False)


@router.get("/jobs", response_model=list[FederatedJob], summary="Federated jobs, oldest first")
def list_jobs(ctx: Context, caller: Caller) -> list[dict[str, Any]]:
    caller.require(Permission.MODELS_READ)
    coordinator = ctx.federation
    return [coordinator.view(job, rounds=False) for job in coordinator.jobs()]


@router.get(
    "/jobs/{job_id}",
    response_model=FederatedJob,
    summary="A job with every round's participants and metrics",
)
def show_job(job_id: str, ctx: Context, caller: Caller) -> dict[str, Any]:
    caller.require(Permission.MODELS_READ)
    coordinator = ctx.federation
    return coordinator.view(coordinator.job(job_id))


@router.post("/jobs/{job_id}/abort", response_model=FederatedJob, summary="Abort a running job")
def abort_job(
    job_id: str, ctx: Context, caller: Caller, body: AbortIn | None = None
) -> dict[str, Any]:
    coordinator = ctx.federation
    require(ctx, caller, Permission.MODELS_WRITE, "fl.abort", job_id)
    with audited(ctx, caller, "fl.abort", job_id):
        job = coordinator.abort(job_id, (body or AbortIn()).reason)
    return coordinator.view(job, rounds=False)


@router.get(
    "/consent", response_model=Consents, summary="What each site declared about taking part"
)
def consents(ctx: Context, caller: Caller) -> dict[str, dict[str, Any]]:
    caller.require(Permission.SITES_READ)
    return ctx.federation.consents()


# --- sites ----------------------------------------------------------------------------


@router.put("/sites/{site}/consent", summary="A site declares whether and how it takes part")
async def declare(site: str, body: dict[str, Any], ctx: Context, caller: Caller) -> dict[str, Any]:
    require_site(ctx, caller, site, "fl.consent", "declare its consent")
    consent = await run_in_threadpool(ctx.federation.declare, site, body)
    return consent.model_dump(mode="json")


#: How long a site may ask the hub to hold a task poll (or an update post) open.
WaitSeconds = Annotated[
    float, Query(ge=0, le=120, description="Seconds to hold the request while no task is open.")
]


async def _next_tasks(
    ctx: HubContext, coordinator: Coordinator, site: str, wait: float
) -> list[dict[str, Any]]:
    """The site's open tasks, waiting up to ``wait`` seconds for one to appear."""
    deadline = time.monotonic() + min(wait, ctx.settings.long_poll_max_s)
    while True:
        found = coordinator.cached_tasks_for(site)
        if found is None:  # no fresh snapshot: build it off the event loop
            found = await off_loop(coordinator.tasks_for, site)
        remaining = deadline - time.monotonic()
        if found or remaining <= 0 or coordinator.bell.closed:  # closed: the hub is stopping
            return found
        await coordinator.bell.wait(site, min(remaining, 1.0))


async def site_tasks(ctx: HubContext, caller: Principal, site: str, wait: float) -> dict[str, Any]:
    """A site's task poll (shared by the route below and the hub's fast path)."""
    if caller.role != Role.SITE or caller.site != site:  # audited refusal, off the loop
        await off_loop(require_site, ctx, caller, site, "fl.tasks", "read its tasks")
    coordinator = ctx.federation
    return {"site": site, "tasks": await _next_tasks(ctx, coordinator, site, wait)}


async def _close_if_complete(coordinator: Coordinator, answer: dict[str, Any]) -> None:
    """After the answer that completes a round, close it (and open the next) now; else
    its deadline closes it. A failure here still answers the stored update: the
    coordinator loop retries the step."""
    if not answer["round_complete"]:
        return
    try:
        await off_loop(coordinator.advance, answer["job"])
    except Exception:
        log.exception("closing round %d of federated job %s failed", answer["round"], answer["job"])


async def site_update(
    ctx: HubContext, caller: Principal, job_id: str, number: int, body: bytes, wait: float
) -> dict[str, Any]:
    """A site's update (shared by the route below and the hub's fast path).

    The post that completes a round closes it (and opens the next) before answering; with
    ``wait`` the answer also carries the site's next tasks, held like a task poll, so a
    site needs one request per round instead of a post and a poll.
    """
    coordinator = ctx.federation
    if caller.role != Role.SITE or caller.site is None:
        await off_loop(_own_site, ctx, caller, "fl.update", f"{job_id}/{number}")
    site = str(caller.site)
    result = await off_loop(coordinator.submit, site, job_id, number, body)
    await _close_if_complete(coordinator, result)
    if not wait:
        return result
    return result | {"tasks": await _next_tasks(ctx, coordinator, site, wait)}


@router.get("/sites/{site}/tasks", summary="The site's open tasks; long-polls while none")
async def tasks(site: str, ctx: Context, caller: Caller, wait: WaitSeconds = 0) -> dict[str, Any]:
    return await site_tasks(ctx, caller, site, wait)


@router.get(
    "/jobs/{job_id}/rounds/{number}/weights",
    summary="A round's global weights (tensor envelope)",
    response_class=Response,
)
async def round_weights(job_id: str, number: RoundPath, ctx: Context, caller: Caller) -> Response:
    coordinator = ctx.federation
    if caller.role == Role.SITE:
        site: str | None = caller.site
    else:
        caller.require(Permission.MODELS_READ)
        site = None
    data = await run_in_threadpool(coordinator.weights_for, job_id, number, site)
    return Response(data, media_type=wire.MEDIA_TYPE)


@router.post(
    "/jobs/{job_id}/rounds/{number}/updates",
    summary="A site posts its update (tensor envelope: delta, num_examples, metrics)",
)
async def post_update(
    job_id: str,
    number: RoundPath,
    request: Request,
    ctx: Context,
    caller: Caller,
    wait: WaitSeconds = 0,
) -> dict[str, Any]:
    """With ``wait``, the answer also carries the site's next tasks (see ``site_update``)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_UPDATE_BYTES:
            raise ArtifactTooLarge("update exceeds the hub's limit")
    return await site_update(ctx, caller, job_id, number, bytes(body), wait)


@router.post(
    "/jobs/{job_id}/rounds/{number}/refusals",
    summary="A site declines a task, with the reason operators will see",
)
async def post_refusal(
    job_id: str,
    number: RoundPath,
    body: RefusalIn,
    ctx: Context,
    caller: Caller,
) -> dict[str, Any]:
    coordinator = ctx.federation
    site = _own_site(ctx, caller, "fl.refuse", f"{job_id}/{number}")
    result = await off_loop(coordinator.refuse, site, job_id, number, body.attempt, body.reason)
    await _close_if_complete(coordinator, result)
    return result
