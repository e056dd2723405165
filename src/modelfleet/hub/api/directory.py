"""``GET /api/v1/directory``: where clients may send inference requests.

Every site with its public inference URL (as the site reports it), labels, liveness as the hub
sees it, and the models it serves right now (active version and state). Any human or client
token with read access to sites may read it (``viewer`` and up): it is what the SDK and the
gateway route with, and they cache it so that inference keeps working without the hub.
Enrollment secrets and credentials are never part of it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from modelfleet.hub.api.deps import Caller, Context
from modelfleet.hub.auth import Permission
from modelfleet.hub.context import HubContext

router = APIRouter(prefix="/api/v1", tags=["routing"])


def directory(ctx: HubContext) -> dict[str, Any]:
    sites = []
    for record in ctx.sites.list():
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
    return {"generated_at": datetime.now(UTC).isoformat(), "sites": sites}


@router.get(
    "/directory",
    summary="Sites with public inference URLs, labels, health and the models they serve",
)
async def get_directory(ctx: Context, caller: Caller) -> dict[str, Any]:
    caller.require(Permission.SITES_READ)
    return await run_in_threadpool(directory, ctx)
