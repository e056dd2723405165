"""``GET /api/v1/directory``: where clients may send inference requests.

Every site with its public inference URL (as the site reports it), labels, liveness as the hub
sees it, and the models it serves right now (active version and state); and the fleet's
residency policies (``residency.policies``: name, regions, allowed_jurisdictions, label)
and the jurisdiction each ``region`` label value belongs to by the sites' labels
(``residency.regions``),
because the rule that keeps a model trained on EU data at EU sites also keeps a request with
EU data there: the SDK and the gateway route by these rules, and cache them with the sites so
that they hold while the hub is away (``routing/residency.py``). Any human token
(``viewer`` and up) and any ``infer`` token may read it: it is what the SDK and the gateway
route with, and they cache it so that inference keeps working without the hub. An infer
token limited to a site selector sees only those sites. Enrollment secrets and credentials
are never part of it.

``GET /api/v1/grants/gateway``: the signed grant list a gateway checks its callers against
(every active infer token, each with the sites it may reach), with the signing key set.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from modelfleet.errors import PermissionDenied
from modelfleet.hub.api.deps import Caller, Context
from modelfleet.hub.auth import Permission, Role
from modelfleet.hub.context import HubContext
from modelfleet.hub.policy import ResidencyRule
from modelfleet.hub.selectors import parse_selector
from modelfleet.routing.residency import region_jurisdictions

router = APIRouter(prefix="/api/v1", tags=["routing"])


def directory(ctx: HubContext, site_selector: str | None = None) -> dict[str, Any]:
    sites = []
    selector = parse_selector(site_selector) if site_selector is not None else None
    records = ctx.sites.list()
    for record in records:
        if selector is not None and not selector.matches(record.labels):
            continue
        view = ctx.sites.view(record)
        models = [
            {
                "name": m["name"],
                "version": m["active_version"],
                "state": m["state"],
                # A site keeps serving its active version while a newer one downloads or
                # fails to load, so "serving something" is what routing needs.
                "ready": m["active_version"] is not None,
            }
            for m in view["models"]
            # Only what the hub assigned there: a site cannot advertise a model of its own
            # choosing (a report is the site's word, the assignment is the hub's).
            if m["assigned_version"] is not None
        ]
        sites.append(
            {
                "name": view["name"],
                "url": view["url"],
                "labels": view["labels"],
                "online": view["online"],
                "last_seen": view["last_seen"],
                "models": models,
            }
        )
    # Every residency rule, whatever sites the caller sees: a rule left out would widen
    # where that caller's data may go.
    policies = [
        {"name": rule.name, **rule.spec()}
        for rule in ctx.deployments.rules()
        if isinstance(rule, ResidencyRule)
    ]
    # The region -> jurisdiction map from every site's labels, for the same reason.
    regions = region_jurisdictions(record.labels for record in records)
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "sites": sites,
        "residency": {
            "policies": policies,
            "regions": {region: sorted(names) for region, names in sorted(regions.items())},
        },
    }


@router.get(
    "/directory",
    summary="Sites with public inference URLs, labels, health and the models they serve, "
    "and the residency policies requests are routed by",
)
async def get_directory(ctx: Context, caller: Caller) -> dict[str, Any]:
    caller.require(Permission.DIRECTORY_READ)
    return await run_in_threadpool(directory, ctx, caller.site_selector)


def gateway_grants(ctx: HubContext) -> dict[str, Any]:
    sites = {record.name: record.labels for record in ctx.sites.list()}
    signed = ctx.sites.grants.for_gateway(sites)
    keyset = ctx.registry.signed_keyset()
    return {
        "text": signed["text"],
        "signature": signed["signature"],
        "keyset": {
            "revision": keyset.revision,
            "text": keyset.text,
            "signature": keyset.signature,
        },
    }


@router.get(
    "/grants/gateway",
    summary="The signed list of infer tokens a gateway accepts (a gateway's token or admin)",
)
def get_gateway_grants(ctx: Context, caller: Caller) -> dict[str, Any]:
    # A gateway calls sites for every caller it admits, so only an unscoped infer token
    # (the gateway's own) or an admin may fetch the list of every token's hash.
    unscoped_infer = caller.role == Role.INFER and _unscoped(ctx, caller.token_id)
    if not unscoped_infer and not caller.can(Permission.TOKENS_ADMIN):
        ctx.store.audit.record(
            actor=caller.actor, action="grants.gateway", object="gateway", outcome="forbidden"
        )
        raise PermissionDenied(
            f"token {caller.name!r} may not read the gateway's grants: use an infer token "
            "without --model/--sites (the gateway's own) or an admin token"
        )
    return gateway_grants(ctx)


def _unscoped(ctx: HubContext, token_id: str) -> bool:
    record = ctx.store.tokens.get(token_id)
    return record is not None and record.models is None and record.site_selector is None
