"""/api/v1/evaluations: compare versions of a model on the sites' own labelled data.

Operators (or the pipeline) start an evaluation and read its outcome; sites dial out as
everywhere else: they long-poll their evaluation tasks, download the versions' blobs
(only those of an evaluation they were selected for) and post counts or a refusal.
Starting one needs ``models:write`` (its outcome moves aliases), reading ``models:read``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from modelfleet.api.evaluations import (
    Comparison,
    Evaluation,
    EvaluationIn,
    EvaluationResultIn,
    RefusalIn,
    SiteScore,
    VersionScore,
)
from modelfleet.errors import InvalidInput, PermissionDenied
from modelfleet.hub.api.deps import Caller, Context, audited, require, require_site
from modelfleet.hub.api.ranges import parse_range
from modelfleet.hub.auth import Permission, Principal, Role
from modelfleet.hub.context import HubContext
from modelfleet.hub.evaluation_scores import EvaluationRecord, beats, margin
from modelfleet.hub.evaluation_scores import VersionScore as Score

router = APIRouter(prefix="/api/v1/evaluations", tags=["evaluations"])

#: How long a site may ask the hub to hold a task poll open.
WaitSeconds = Annotated[
    float, Query(ge=0, le=120, description="Seconds to hold the request while no task is open.")
]
#: How often a held task poll looks again (the service's snapshot: changes made by another
#: replica); a change made in this process wakes it at once.
RECHECK_S = 5.0


def _score(s: Score) -> VersionScore:
    return VersionScore(
        version=s.version,
        metric=s.metric,
        value=s.value,
        count=s.count,
        sites=s.sites,
        classes=s.classes,
    )


def evaluation_view(record: EvaluationRecord) -> Evaluation:
    """The record as the API shows it, with the first version compared to each other."""
    by_version = dict(zip(record.versions, record.refs, strict=False))
    first = record.versions[0]
    comparisons = {
        f"{by_version[first]}_vs_{by_version[other]}": Comparison(
            candidate=first,
            incumbent=other,
            beats=beats(record, first, other),
            margin=margin(record, first, other),
        )
        for other in record.versions[1:]
    }
    return Evaluation(
        id=record.id,
        model=record.model,
        versions=record.versions,
        refs=record.refs,
        selector=record.selector,
        metric=record.metric,
        min_samples=record.min_samples,
        data=record.data,
        rows=record.rows,
        state=record.state,
        winner=record.winner,
        message=record.message,
        deadline_at=record.deadline_at,
        created_by=record.created_by,
        created_at=record.created_at,
        finished_at=record.finished_at,
        per_version={v: _score(s) for v, s in record.per_version.items()},
        sites={
            name: SiteScore(
                site=name,
                status=o.status,
                reason=o.reason,
                scores={v: _score(s) for v, s in o.scores.items()},
            )
            for name, o in record.sites.items()
        },
        beats=comparisons,
    )


def _own_site(ctx: HubContext, caller: Principal, action: str, obj: str) -> str:
    if caller.role != Role.SITE or caller.site is None:
        ctx.store.audit.record(actor=caller.actor, action=action, object=obj, outcome="forbidden")
        raise PermissionDenied("only a site credential may answer an evaluation")
    return caller.site


# --- operators ------------------------------------------------------------------------


@router.post("", response_model=Evaluation, status_code=201, summary="Start an evaluation")
def start_evaluation(body: EvaluationIn, ctx: Context, caller: Caller) -> Evaluation:
    require(ctx, caller, Permission.MODELS_WRITE, "evaluation.start", body.model)
    with audited(ctx, caller, "evaluation.start", body.model) as detail:
        record = ctx.evaluations.create(body, caller.actor)
        detail.append(f"{record.id} versions={record.versions} sites={record.selector!r}")
    return evaluation_view(record)


@router.get("", response_model=list[Evaluation], summary="Evaluations, newest first")
def list_evaluations(
    ctx: Context,
    caller: Caller,
    model: Annotated[str | None, Query(max_length=255)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[Evaluation]:
    caller.require(Permission.MODELS_READ)
    return [evaluation_view(r) for r in ctx.evaluations.list(model, limit)]


@router.get("/{evaluation_id}", response_model=Evaluation, summary="One evaluation")
def show_evaluation(evaluation_id: str, ctx: Context, caller: Caller) -> Evaluation:
    caller.require(Permission.MODELS_READ)
    return evaluation_view(ctx.evaluations.get(evaluation_id))


# --- sites ----------------------------------------------------------------------------


@router.get("/sites/{site}/tasks", summary="The site's evaluation tasks; long-polls while none")
async def site_tasks(
    site: str, ctx: Context, caller: Caller, wait: WaitSeconds = 0
) -> dict[str, Any]:
    if caller.role != Role.SITE or caller.site != site:
        await run_in_threadpool(require_site, ctx, caller, site, "evaluation.tasks", "read them")
    service = ctx.evaluations
    deadline = time.monotonic() + min(wait, ctx.settings.long_poll_max_s)
    while True:
        found = await run_in_threadpool(service.tasks_for, site)
        remaining = deadline - time.monotonic()
        if found or remaining <= 0 or service.bell.closed:
            return {"site": site, "tasks": [t.model_dump(mode="json") for t in found]}
        await service.bell.wait(site, min(remaining, RECHECK_S))


@router.get(
    "/{evaluation_id}/blobs/{digest}",
    summary="A version's blob for an evaluation the site was selected for (supports Range)",
    response_class=Response,
)
def evaluation_blob(
    evaluation_id: str, digest: str, request: Request, ctx: Context, caller: Caller
) -> Response:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidInput("digest must be 64 lowercase hex characters (sha256)")
    site = _own_site(ctx, caller, "evaluation.blob", evaluation_id)
    ctx.evaluations.blob_for(site, evaluation_id, digest)
    size = ctx.artifacts.size(digest)
    span = parse_range(request.headers.get("range"), size)
    start, end, status = (0, size, 200) if span is None else (span.start, span.end, 206)
    headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start)}
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"

    async def body() -> AsyncIterator[bytes]:
        iterator = ctx.artifacts.read_range(digest, start, end)
        while True:
            chunk = await run_in_threadpool(next, iterator, None)
            if chunk is None:
                return
            yield chunk

    return StreamingResponse(
        body(), status_code=status, headers=headers, media_type="application/octet-stream"
    )


@router.post("/{evaluation_id}/results", summary="A site posts its counts per version")
def post_results(
    evaluation_id: str, body: EvaluationResultIn, ctx: Context, caller: Caller
) -> dict[str, Any]:
    site = _own_site(ctx, caller, "evaluation.result", evaluation_id)
    new = ctx.evaluations.answer(site, evaluation_id, body)
    return {"evaluation": evaluation_id, "site": site, "accepted": True, "new": new}


@router.post("/{evaluation_id}/refusals", summary="A site declines, with its reason")
def post_refusal(
    evaluation_id: str, body: RefusalIn, ctx: Context, caller: Caller
) -> dict[str, Any]:
    site = _own_site(ctx, caller, "evaluation.refuse", evaluation_id)
    new = ctx.evaluations.refuse(site, evaluation_id, body.reason)
    return {"evaluation": evaluation_id, "site": site, "refused": True, "new": new}
