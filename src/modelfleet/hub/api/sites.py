"""/api/v1/sites and /api/v1/enroll: the hub's side of every site agent."""

from __future__ import annotations

import functools
import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

from modelfleet.api import Assignment, AssignmentsRevision, Site, SiteEnrollment
from modelfleet.errors import PermissionDenied
from modelfleet.hub.api.deps import (
    Caller,
    Context,
    audited,
    client_address,
    require,
    require_site,
)
from modelfleet.hub.auth import Permission, Principal, Role

router = APIRouter(prefix="/api/v1", tags=["sites"])


_ENROLLMENT_TTL = (
    "The enrollment token's lifetime: seconds, or a duration such as 90m, 12h, 2d. Omitted: "
    "the hub's default (24 h); longer than its maximum (7 days by default): 400."
)


class SiteIn(BaseModel):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    enrollment_ttl_s: str | float | None = Field(default=None, description=_ENROLLMENT_TTL)


class ReissueIn(BaseModel):
    enrollment_ttl_s: str | float | None = Field(default=None, description=_ENROLLMENT_TTL)


class EnrollIn(BaseModel):
    token: str = Field(max_length=512, description="The one-time enrollment token.")
    csr: str | None = Field(
        default=None,
        max_length=16 * 1024,
        description="PEM certificate signing request of the key the site made for itself; "
        "the hub answers with the site's certificate (its key never leaves the site).",
    )


class CsrIn(BaseModel):
    csr: str = Field(max_length=16 * 1024, description="PEM certificate signing request.")


class AssignIn(BaseModel):
    ref: str = Field(description="NAME, NAME:V or NAME@ALIAS (resolved now).")
    params: dict[str, Any] = Field(default_factory=dict)


class AssignmentsIn(BaseModel):
    models: list[AssignIn]


class LabelsIn(BaseModel):
    labels: dict[str, str]


class ModelErrorIn(BaseModel):
    """Why a model is not serving (an error class's code and message)."""

    code: str = Field(max_length=64)
    message: str = Field(max_length=4000)


class ModelReportIn(BaseModel):
    """One model as the site runs it (``site.reconciler.ModelStatus``)."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    desired_version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    active_version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    state: str = Field(default="pending", max_length=32)
    error: ModelErrorIn | None = None


class StorageReportIn(BaseModel):
    """One store of the site whose disk was full (``site.storage.StorageHealth.report``)."""

    model_config = ConfigDict(extra="ignore")

    full: bool = False
    full_since: float | None = Field(default=None, ge=0, le=1e11)
    lost: int = Field(default=0, ge=0, le=2**62)
    lost_in_episode: int = Field(default=0, ge=0, le=2**62)
    episodes: int = Field(default=0, ge=0, le=2**62)
    message: str = Field(default="", max_length=500)


class SiteReportIn(BaseModel):
    """A site's heartbeat. What it says is the site's own view, so each field is bounded and
    unknown ones are dropped rather than stored (a report is kept on every heartbeat)."""

    model_config = ConfigDict(extra="ignore")

    agent_version: str | None = Field(default=None, max_length=64)
    uptime_s: float | None = Field(default=None, ge=0, le=1e10)
    url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://[^\s]+$",
        description="The site's public inference URL (http or https).",
    )
    applied_revision: int | None = Field(default=None, ge=0, le=2**62)
    desired_state_refused: str | None = Field(
        default=None,
        max_length=2000,
        description="Why the site refused the last desired state it received (a replay, "
        "another site's, expired, a bad signature); absent when it took it.",
    )
    models: list[ModelReportIn] = Field(default_factory=list, max_length=1024)
    storage: dict[Annotated[str, Field(max_length=32)], StorageReportIn] | None = Field(
        default=None,
        max_length=8,
        description="The site's stores whose disk was full since it started: whether it is "
        "full now and what it could not keep (docs/monitoring.md).",
    )


def _etag(revision: int, keyset_revision: int, grants: str) -> str:
    """The desired state's version: the site's revision, the key set's, and the infer
    tokens' fingerprint (a created or revoked token is news to every site)."""
    return f'"r{revision}k{keyset_revision}g{grants}"'


def _own_site(ctx: Context, caller: Principal, site: str, action: str) -> None:
    """A site credential acts only on its own site; humans need the sites permission."""
    if caller.role == Role.SITE:
        if caller.site != site:
            ctx.store.audit.record(
                actor=caller.actor, action=action, object=site, outcome="forbidden"
            )
            raise PermissionDenied(
                f"site credential of {caller.site!r} may not act on site {site!r}"
            )
        return
    caller.require(Permission.SITES_READ)


@router.post(
    "/sites",
    response_model=SiteEnrollment,
    status_code=201,
    summary="Register a site (prints a one-time enrollment token)",
)
def add_site(body: SiteIn, ctx: Context, caller: Caller) -> dict[str, Any]:
    require(ctx, caller, Permission.SITES_WRITE, "site.add", body.name)
    with audited(ctx, caller, "site.add", body.name) as detail:
        record, secret = ctx.sites.add(body.name, body.labels, body.enrollment_ttl_s)
        detail.append(",".join(f"{k}={v}" for k, v in sorted(record.labels.items())))
    return {**ctx.sites.view(record), "enrollment_token": secret}


@router.post(
    "/sites/{name}/enrollment",
    response_model=SiteEnrollment,
    status_code=201,
    summary="Issue a new enrollment token",
)
def reissue(
    name: str, ctx: Context, caller: Caller, body: ReissueIn | None = None
) -> dict[str, Any]:
    require(ctx, caller, Permission.SITES_WRITE, "site.reissue", name)
    with audited(ctx, caller, "site.reissue", name):
        record, secret = ctx.sites.reissue(name, body.enrollment_ttl_s if body else None)
    return {**ctx.sites.view(record), "enrollment_token": secret}


@router.get(
    "/sites", response_model=list[Site], summary="All sites with liveness and reported models"
)
def list_sites(ctx: Context, caller: Caller) -> list[dict[str, Any]]:
    caller.require(Permission.SITES_READ)
    return [ctx.sites.view(s) for s in ctx.sites.list()]


@router.get("/sites/{name}", response_model=Site, summary="One site")
def show_site(name: str, ctx: Context, caller: Caller) -> dict[str, Any]:
    _own_site(ctx, caller, name, "site.show")
    return ctx.sites.view(ctx.sites.get(name))


@router.delete("/sites/{name}", status_code=204, summary="Remove a site and revoke its credential")
def remove_site(name: str, ctx: Context, caller: Caller) -> Response:
    require(ctx, caller, Permission.SITES_WRITE, "site.remove", name)
    with audited(ctx, caller, "site.remove", name):
        ctx.sites.remove(name)
    ctx.notifier.notify(name)
    return Response(status_code=204)


@router.post(
    "/sites/{name}/decommission",
    response_model=Site,
    summary="Take a site out of service: unassign everything and have it wipe its cache",
)
def decommission(name: str, ctx: Context, caller: Caller) -> dict[str, Any]:
    require(ctx, caller, Permission.SITES_WRITE, "site.decommission", name)
    with audited(ctx, caller, "site.decommission", name):
        record = ctx.sites.decommission(name)
    ctx.notifier.notify(name)
    return ctx.sites.view(record)


@router.put("/sites/{name}/labels", response_model=Site, summary="Replace a site's labels")
def set_labels(name: str, body: LabelsIn, ctx: Context, caller: Caller) -> dict[str, Any]:
    require(ctx, caller, Permission.SITES_WRITE, "site.labels", name)
    with audited(ctx, caller, "site.labels", name):
        record = ctx.sites.set_labels(name, body.labels)
    ctx.notifier.notify(name)  # a new revision: labels decide the site's grants too
    return ctx.sites.view(record)


@router.get(
    "/enroll/ca",
    summary="The fleet CA (public; an enrolling site checks it against its token's fingerprint)",
)
def fleet_ca(ctx: Context) -> dict[str, str]:
    return {"ca": ctx.sites.certificates.ca_pem.decode()}


@router.post("/enroll", summary="Exchange a one-time enrollment token for a site credential")
def enroll(body: EnrollIn, request: Request, ctx: Context) -> dict[str, Any]:
    address = client_address(request.scope)
    ctx.limiter.check(address)  # anonymous: a guessing loop is refused before any lookup
    try:
        enrolled = ctx.sites.enroll(body.token, body.csr.encode() if body.csr else None)
    except Exception as exc:
        # Audited, but only the first few per address and minute (hub/ratelimit.py).
        if ctx.limiter.failed(address):
            ctx.store.audit.record(
                actor=f"anonymous@{address or '-'}",
                action="site.enroll",
                object="-",
                outcome=getattr(exc, "code", "internal"),
                detail=str(exc)[:500],
            )
        raise
    ctx.store.audit.record(
        actor=f"site:{enrolled.site.name}",
        action="site.enroll",
        object=enrolled.site.name,
        outcome="ok",
    )
    keyset = ctx.registry.keys.signed()
    return {
        "site": enrolled.site.name,
        "labels": enrolled.site.labels,
        "token": enrolled.token,
        "public_key": ctx.registry.public_key,
        "key_id": ctx.registry.key_id,
        "keyset": {"text": keyset.text, "signature": keyset.signature},
        "ca": ctx.sites.certificates.ca_pem.decode(),
        "certificate": enrolled.certificate.decode() if enrolled.certificate else None,
    }


@router.post(
    "/sites/{name}/certificate",
    summary="Renew the site's certificate from a new CSR (the site itself only)",
)
async def renew_certificate(name: str, body: CsrIn, ctx: Context, caller: Caller) -> dict[str, Any]:
    require_site(ctx, caller, name, "site.certificate", "renew its certificate")
    with audited(ctx, caller, "site.certificate", name) as detail:
        issued = await run_in_threadpool(ctx.sites.certificates.renew, name, body.csr.encode())
        detail.append(f"serial {issued.serial}, until {issued.not_after.isoformat()}")
    return {
        "certificate": issued.pem.decode(),
        "ca": ctx.sites.certificates.ca_pem.decode(),
        "not_after": issued.not_after,
    }


@router.post(
    "/sites/{name}/assignments",
    response_model=Assignment,
    status_code=201,
    summary="Assign one model to a site",
)
async def assign(name: str, body: AssignIn, ctx: Context, caller: Caller) -> dict[str, Any]:
    require(ctx, caller, Permission.SITES_WRITE, "site.assign", name)
    with audited(ctx, caller, "site.assign", f"{name}/{body.ref}"):
        item = await run_in_threadpool(ctx.sites.assign, name, body.ref, body.params)
    ctx.notifier.notify(name)
    return {
        "site": item.site,
        "model": item.model,
        "version": item.version,
        "ref": item.ref,
        "params": item.params,
    }


@router.put(
    "/sites/{name}/assignments",
    response_model=AssignmentsRevision,
    summary="Replace a site's assignments (the low-level primitive)",
)
async def replace_assignments(
    name: str, body: AssignmentsIn, ctx: Context, caller: Caller
) -> dict[str, Any]:
    require(ctx, caller, Permission.SITES_WRITE, "site.assignments", name)
    with audited(ctx, caller, "site.assignments", name) as detail:
        items = [(m.ref, m.params) for m in body.models]
        revision = await run_in_threadpool(ctx.sites.replace, name, items)
        detail.append(" ".join(m.ref for m in body.models) or "(none)")
    ctx.notifier.notify(name)
    return {"site": name, "revision": revision}


@router.delete("/sites/{name}/assignments/{model}", status_code=204, summary="Unassign a model")
async def unassign(name: str, model: str, ctx: Context, caller: Caller) -> Response:
    require(ctx, caller, Permission.SITES_WRITE, "site.unassign", f"{name}/{model}")
    with audited(ctx, caller, "site.unassign", f"{name}/{model}"):
        await run_in_threadpool(ctx.sites.unassign, name, model)
    ctx.notifier.notify(name)
    return Response(status_code=204)


@router.get(
    "/sites/{name}/desired-state",
    summary="What the site should run; long-polls while If-None-Match equals the current ETag",
    responses={304: {"description": "Unchanged within the wait"}},
)
async def desired_state(
    name: str,
    ctx: Context,
    caller: Caller,
    wait: Annotated[float, Query(ge=0, le=120, description="Seconds to hold the request.")] = 0,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    _own_site(ctx, caller, name, "site.desired")
    deadline = time.monotonic() + min(wait, ctx.settings.long_poll_max_s)
    exact = True  # the first look, and after a wake-up from a change made here
    while True:
        # The once-a-second re-checks (for changes made through another replica) share
        # one table-wide read: thousands of waiting sites cost one query, not thousands.
        revision = None if exact else ctx.sites.known_revision(name)
        if revision is None:
            revision = await run_in_threadpool(
                functools.partial(ctx.sites.revision, name, recent=not exact)
            )
        grants = ctx.sites.grants.known_fingerprint()
        if grants is None:
            grants = await run_in_threadpool(ctx.sites.grants.fingerprint)
        etag = _etag(revision, ctx.sites.keyset_revision(), grants)
        if if_none_match != etag:
            doc = await run_in_threadpool(ctx.sites.desired_state, name)
            tag = _etag(doc["revision"], doc["keyset"]["revision"], doc["grants"]["fingerprint"])
            return JSONResponse(doc, headers={"ETag": tag})
        remaining = deadline - time.monotonic()
        if remaining <= 0 or ctx.notifier.closed:  # closed: the hub is stopping
            return Response(status_code=304, headers={"ETag": etag})
        exact = await ctx.notifier.wait(name, min(remaining, 1.0))


@router.post(
    "/sites/{name}/report", status_code=204, summary="A site reports its state (heartbeat)"
)
async def report(name: str, body: SiteReportIn, ctx: Context, caller: Caller) -> Response:
    require_site(ctx, caller, name, "site.report", "report for it")
    await run_in_threadpool(ctx.sites.report, name, body.model_dump(exclude_none=True))
    return Response(status_code=204)
