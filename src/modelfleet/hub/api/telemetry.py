"""Telemetry endpoints: site ingest, fleet status and drift for humans, reference profiles.

- ``POST /api/v1/sites/{name}/telemetry`` — a site delivers a batch of its own windows;
  idempotent by batch id and window id.
- ``GET /api/v1/telemetry/status`` — every site at a glance (what ``modelfleet status``
  and the dashboard draw).
- ``GET /api/v1/telemetry/drift/{model}`` — per-feature drift per site and version.
- ``PUT|GET /api/v1/models/{name}/versions/{v}/reference-profile`` — the sketches of a
  version's training data (operators upload; computed on the user's machine).
- ``PUT|GET /api/v1/models/{name}/drift-thresholds`` — per-model threshold overrides.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, field_validator, model_validator

from modelfleet.api import DriftReport, DriftThresholds, ReferenceProfile, TelemetryStatus
from modelfleet.hub.api.deps import (
    Caller,
    Context,
    VersionPath,
    VersionQuery,
    audited,
    require,
    require_site,
)
from modelfleet.hub.auth import Permission
from modelfleet.hub.telemetry import Telemetry
from modelfleet.monitoring.profiles import MAX_PROFILE_COLUMNS

router = APIRouter(prefix="/api/v1", tags=["telemetry"])

_ID = r"^[A-Za-z0-9_-]{1,64}$"
#: Bounds of what a window may claim: counts fit a signed 64-bit column with room to sum
#: (what they may total is bounded at the store: ``MAX_TOTAL``, 2^62 per site and version).
MAX_COUNT = 1 << 53
MAX_VERSION = 1 << 31
Key = Annotated[str, Field(max_length=256)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


ClassName = Annotated[str, Field(max_length=128)]


class FeedbackIn(BaseModel):
    """Counts of labels joined at the site (``modelfleet.site.feedback``): a confusion
    count or error sums and the dropped labels by reason; never an id or a label row."""

    kind: Literal["classifier", "regressor"] | None = None
    labels: int = Field(default=0, ge=0, le=MAX_COUNT)
    confusion: list[tuple[ClassName, ClassName, Count]] = Field(
        default_factory=list, max_length=4096
    )
    abs_error_sum: float = Field(default=0.0, ge=0)
    squared_error_sum: float = Field(default=0.0, ge=0)
    dropped: dict[Key, Count] = Field(default_factory=dict, max_length=16)

    @field_validator("abs_error_sum", "squared_error_sum")
    @classmethod
    def _finite_sum(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FeedbackIn:
        if self.kind == "classifier" and sum(n for _, _, n in self.confusion) != self.labels:
            raise ValueError("a classifier's confusion counts must add up to its labels")
        if self.kind != "classifier" and self.confusion:
            raise ValueError("only a classifier has confusion counts")
        if self.kind is None and self.labels:
            raise ValueError("labels need a kind (classifier or regressor)")
        return self


class WindowIn(BaseModel):
    """One closed window (see ``modelfleet.site.telemetry``). Every count, map and
    profile is bounded here, so the schema says what the hub accepts."""

    id: str = Field(pattern=_ID)
    model: str = Field(min_length=1, max_length=255)
    version: int = Field(ge=1, le=MAX_VERSION)
    start: float
    end: float
    requests: int = Field(ge=0, le=MAX_COUNT)
    rows: int = Field(default=0, ge=0, le=MAX_COUNT)
    errors: int = Field(default=0, ge=0, le=MAX_COUNT)
    outcomes: dict[Key, Count] = Field(default_factory=dict, max_length=64)
    latency: dict[Key, Count] = Field(default_factory=dict, max_length=64)
    latency_sum: float = Field(default=0.0, ge=0)
    batch_sizes: dict[Key, Count] = Field(default_factory=dict, max_length=64)
    sampled_requests: int = Field(default=0, ge=0, le=MAX_COUNT)
    inputs: dict[Key, dict[str, Any]] = Field(default_factory=dict, max_length=MAX_PROFILE_COLUMNS)
    outputs: dict[Key, dict[str, Any]] = Field(default_factory=dict, max_length=MAX_PROFILE_COLUMNS)
    feedback: FeedbackIn | None = None

    @field_validator("start", "end", "latency_sum")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value) or not 0 <= value < 1e11:
            raise ValueError("must be a finite epoch time / duration")
        return value


class DroppedIn(BaseModel):
    windows: int = Field(default=0, ge=0, le=MAX_COUNT)
    requests: int = Field(default=0, ge=0, le=MAX_COUNT)


class BatchIn(BaseModel):
    batch_id: str = Field(pattern=_ID)
    spool_id: str = Field(pattern=_ID)
    dropped: DroppedIn = Field(default_factory=DroppedIn)
    windows: list[WindowIn] = Field(default_factory=list, max_length=10_000)
    #: The site's clock when it sent the batch (epoch seconds): the hub rebases the
    #: windows' times onto its own clock by the difference (hub/telemetry.py, rebase).
    sent_at: float | None = None

    @field_validator("sent_at")
    @classmethod
    def _finite_sent(cls, value: float | None) -> float | None:
        if value is not None and (not math.isfinite(value) or not 0 <= value < 1e11):
            raise ValueError("must be a finite epoch time")
        return value


def _service(ctx: Context) -> Telemetry:
    service: Telemetry = ctx.telemetry
    return service


@router.post(
    "/sites/{name}/telemetry",
    summary="A site delivers closed telemetry windows (idempotent by batch and window id)",
)
async def ingest(name: str, body: BatchIn, ctx: Context, caller: Caller) -> dict[str, Any]:
    require_site(ctx, caller, name, "site.telemetry", "send its telemetry")
    windows = [w.model_dump() for w in body.windows]
    result = await run_in_threadpool(
        _service(ctx).ingest,
        name,
        body.batch_id,
        body.spool_id,
        (body.dropped.windows, body.dropped.requests),
        windows,
        sent_at=body.sent_at,
    )
    return {
        "batch_id": body.batch_id,
        "clock_skew_s": result.clock_skew_s,
        "duplicate_batch": result.duplicate_batch,
        "accepted": result.accepted,
        "duplicates": result.duplicates,
    }


@router.get(
    "/telemetry/status",
    response_model=TelemetryStatus,
    summary="Every site at a glance: health, traffic, drift, drops",
)
async def status(ctx: Context, caller: Caller) -> dict[str, Any]:
    caller.require(Permission.SITES_READ)
    result: dict[str, Any] = await run_in_threadpool(_service(ctx).status)
    return result


@router.get(
    "/telemetry/drift/{model}",
    response_model=DriftReport,
    summary="Per-feature drift per site and version",
)
async def model_drift(
    model: str,
    ctx: Context,
    caller: Caller,
    version: VersionQuery = None,
    site: str | None = None,
) -> dict[str, Any]:
    caller.require(Permission.MODELS_READ)
    result: dict[str, Any] = await run_in_threadpool(_service(ctx).drift, model, version, site)
    return result


@router.put(
    "/models/{name}/versions/{version}/reference-profile",
    response_model=ReferenceProfile,
    summary="Upload the reference profile (sketches of the training data) of a version",
)
async def put_reference(
    name: str,
    version: VersionPath,
    body: dict[str, Any],
    ctx: Context,
    caller: Caller,
) -> dict[str, Any]:
    obj = f"{name}:{version}"
    require(ctx, caller, Permission.MODELS_WRITE, "model.reference", obj)
    with audited(ctx, caller, "model.reference", obj) as detail:
        result = await run_in_threadpool(
            _service(ctx).set_reference, name, version, body, caller.actor
        )
        detail.append(f"{len(result['columns'])} columns")
    return result


@router.get(
    "/models/{name}/versions/{version}/reference-profile",
    response_model=ReferenceProfile,
    summary="The reference profile of a version",
)
async def get_reference(
    name: str, version: VersionPath, ctx: Context, caller: Caller
) -> dict[str, Any]:
    caller.require(Permission.MODELS_READ)
    result: dict[str, Any] = await run_in_threadpool(
        _service(ctx).describe_reference, name, version
    )
    return result


@router.get(
    "/models/{name}/drift-thresholds",
    response_model=DriftThresholds,
    summary="Drift thresholds in force for a model",
)
async def get_thresholds(name: str, ctx: Context, caller: Caller) -> dict[str, Any]:
    caller.require(Permission.MODELS_READ)
    values = await run_in_threadpool(_service(ctx).thresholds, name)
    return {"model": name, "thresholds": values}


@router.put(
    "/models/{name}/drift-thresholds",
    response_model=DriftThresholds,
    summary="Override drift thresholds for a model",
)
async def put_thresholds(
    name: str, body: dict[str, Any], ctx: Context, caller: Caller
) -> dict[str, Any]:
    require(ctx, caller, Permission.MODELS_WRITE, "model.drift_thresholds", name)
    with audited(ctx, caller, "model.drift_thresholds", name) as detail:
        values = await run_in_threadpool(_service(ctx).set_thresholds, name, body)
        detail.append(",".join(f"{k}={v:g}" for k, v in sorted(body.items()) if k in values))
    return {"model": name, "thresholds": values}
