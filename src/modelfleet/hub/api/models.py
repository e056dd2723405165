"""/api/v1/models: push, list, show, resolve, alias, download."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from modelfleet.api import AliasIn, Model, ModelDetail, Version
from modelfleet.errors import InvalidInput, PermissionDenied
from modelfleet.hub.aliases import alias_moved
from modelfleet.hub.api.deps import Caller, Context, VersionPath, VersionQuery, audited, require
from modelfleet.hub.api.ranges import ByteRange, parse_range
from modelfleet.hub.api.schemas import model_of, version_of
from modelfleet.hub.auth import Permission, Role
from modelfleet.hub.context import HubContext
from modelfleet.hub.registry import PushRequest, parse_metrics, parse_tags
from modelfleet.hub.uploads import spool
from modelfleet.refs import ModelRef, check_name, parse_ref

router = APIRouter(prefix="/api/v1", tags=["models"])

_ONNX_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The ONNX file, streamed as the raw request body.",
    }
}


@router.post(
    "/models/{name}/versions",
    status_code=201,
    response_model=Version,
    openapi_extra=_ONNX_BODY,
    summary="Push a new version (ONNX bytes as the body)",
)
async def push_version(
    name: str,
    request: Request,
    ctx: Context,
    caller: Caller,
    training_region: Annotated[list[str] | None, Query()] = None,
    alias: str | None = None,
    description: str = "",
    framework: str | None = None,
    parent: VersionQuery = None,
    tag: Annotated[list[str] | None, Query()] = None,
    metrics: str | None = None,
) -> Version:
    require(ctx, caller, Permission.MODELS_WRITE, "model.push", name)
    with audited(ctx, caller, "model.push", name) as detail:
        check_name(name, "model name")
        push = PushRequest(
            name=name,
            training_regions=tuple(training_region or ()),
            alias=alias,
            description=description,
            framework=framework,
            parent_version=parent,
            tags=parse_tags(tag or []),
            metrics=parse_metrics(metrics),
        )
        length = request.headers.get("content-length")
        declared = int(length) if length and length.isdigit() else None
        upload = await spool(
            request.stream(),
            ctx.data_dir.tmp_dir,
            max_bytes=ctx.settings.max_artifact_bytes,
            declared_length=declared,
        )
        before = ctx.store.models.resolve_alias(name, alias) if alias is not None else None
        try:
            record = await run_in_threadpool(ctx.registry.push, push, upload, caller.actor)
        finally:
            upload.path.unlink(missing_ok=True)
        detail.append(f"version {record.version} sha256:{record.digest[:12]}")
        ctx.metrics.pushes.labels("ok").inc()
        model = ctx.registry.model(name)
    if alias is not None:
        _alias_moved(ctx, name, alias, before, record.version, caller.actor)
    return version_of(record, model.aliases)


@router.get("/models", response_model=list[Model], summary="List models")
def list_models(ctx: Context, caller: Caller) -> list[Model]:
    caller.require(Permission.MODELS_READ)
    return [model_of(m) for m in ctx.store.models.list_models()]


@router.get("/models/{name}", response_model=ModelDetail, summary="A model and its versions")
def show_model(name: str, ctx: Context, caller: Caller) -> ModelDetail:
    caller.require(Permission.MODELS_READ)
    model = ctx.registry.model(name)
    versions = [version_of(v, model.aliases) for v in ctx.registry.versions(name)]
    return ModelDetail(**model_of(model).model_dump(), versions=versions)


@router.get(
    "/resolve/{ref}",
    response_model=Version,
    summary="Resolve name, name:V or name@alias to a version",
)
def resolve(ref: str, ctx: Context, caller: Caller) -> Version:
    caller.require(Permission.MODELS_READ)
    parsed = parse_ref(ref)
    record = ctx.registry.resolve(parsed)
    return version_of(record, ctx.registry.model(parsed.name).aliases)


@router.get("/models/{name}/versions/{version}", response_model=Version, summary="One version")
def show_version(name: str, version: VersionPath, ctx: Context, caller: Caller) -> Version:
    caller.require(Permission.MODELS_READ)
    record = ctx.registry.resolve(ModelRef(check_name(name, "model name"), version=version))
    return version_of(record, ctx.registry.model(name).aliases)


@router.put("/models/{name}/aliases/{alias}", response_model=Model, summary="Set or move alias")
def set_alias(name: str, alias: str, body: AliasIn, ctx: Context, caller: Caller) -> Model:
    require(ctx, caller, Permission.MODELS_WRITE, "model.alias", f"{name}@{alias}")
    with audited(ctx, caller, "model.alias", f"{name}@{alias}") as detail:
        before = ctx.store.models.resolve_alias(name, alias)
        ctx.registry.set_alias(name, alias, body.version)
        detail.append(f"-> {body.version}")
    _alias_moved(ctx, name, alias, before, body.version, caller.actor)
    return model_of(ctx.registry.model(name))


def _alias_moved(
    ctx: HubContext, name: str, alias: str, before: int | None, version: int, actor: str
) -> None:
    """``model.alias_moved``, told as every alias move tells it (hub/aliases.py)."""
    alias_moved(ctx.events, name, alias, before, version, actor)


@router.delete("/models/{name}/aliases/{alias}", status_code=204, summary="Remove an alias")
def delete_alias(name: str, alias: str, ctx: Context, caller: Caller) -> Response:
    require(ctx, caller, Permission.MODELS_WRITE, "model.unalias", f"{name}@{alias}")
    with audited(ctx, caller, "model.unalias", f"{name}@{alias}"):
        ctx.registry.delete_alias(name, alias)
    return Response(status_code=204)


def _blob_response(ctx: Context, digest: str, range_header: str | None) -> Response:
    size = ctx.artifacts.size(digest)
    span: ByteRange | None = parse_range(range_header, size)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": f'"sha256:{digest}"',
        "X-Content-SHA256": digest,
    }
    start, end, status = 0, size, 200
    if span is not None:
        start, end, status = span.start, span.end, 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)

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


@router.get(
    "/models/{name}/versions/{version}/artifact",
    summary="Download the ONNX bytes (supports Range)",
    response_class=Response,
)
def download_version(
    name: str, version: VersionPath, request: Request, ctx: Context, caller: Caller
) -> Response:
    caller.require(Permission.MODELS_READ)
    record = ctx.registry.resolve(ModelRef(check_name(name, "model name"), version=version))
    return _blob_response(ctx, record.digest, request.headers.get("range"))


@router.get(
    "/blobs/{digest}",
    summary="Download a blob by sha256 (supports Range)",
    response_class=Response,
)
def download_blob(digest: str, request: Request, ctx: Context, caller: Caller) -> Response:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidInput("digest must be 64 lowercase hex characters (sha256)")
    if caller.role == Role.SITE:
        # A site may fetch exactly the blobs assigned to it.
        if caller.site is None or not ctx.store.assignments.site_has_digest(caller.site, digest):
            raise PermissionDenied(f"blob {digest[:12]} is not assigned to site {caller.site!r}")
    else:
        caller.require(Permission.MODELS_READ)
    return _blob_response(ctx, digest, request.headers.get("range"))
