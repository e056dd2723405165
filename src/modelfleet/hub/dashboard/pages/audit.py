"""The audit page: who changed what, newest first, filtered as ``GET /api/v1/audit`` filters
(actor, action, object, outcome, since), one page at a time (JSON twin: the same query)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from modelfleet.errors import InvalidInput
from modelfleet.hub.api.tokens import AUDIT_FILTER_CHARS, AUDIT_MAX_OFFSET, audit_entries
from modelfleet.hub.auth import Permission
from modelfleet.hub.dashboard.pages.fleet import page_number, query_string
from modelfleet.hub.dashboard.render import UiContext, UiSession, render

router = APIRouter(include_in_schema=False)

#: Entries a page shows.
PER_PAGE = 50
_Filter = Annotated[str, Query(max_length=AUDIT_FILTER_CHARS)]


@router.get("/ui/audit")
def audit_page(
    request: Request,
    ctx: UiContext,
    signed_in: UiSession,
    actor: _Filter = "",
    action: _Filter = "",
    object: _Filter = "",
    outcome: Annotated[str, Query(max_length=64)] = "",
    since: Annotated[str, Query(max_length=64)] = "",
    page: Annotated[str | None, Query(max_length=16)] = None,
) -> HTMLResponse:
    filters = {
        "actor": actor.strip(),
        "action": action.strip(),
        "object": object.strip(),
        "outcome": outcome.strip(),
        "since": since.strip(),
    }
    number = page_number(page, AUDIT_MAX_OFFSET // PER_PAGE)
    twin = "/api/v1/audit" + query_string(
        **filters, limit=PER_PAGE, offset=(number - 1) * PER_PAGE or None
    )
    values: dict[str, Any] = {
        "filters": filters,
        "entries": [],
        "error": "",
        "prev": None,
        "next": None,
    }
    status = 200
    if not signed_in.principal.can(Permission.AUDIT_READ):
        values["error"] = f"role {signed_in.principal.role.value!r} may not read the audit log"
        status = 403
    else:
        try:
            # One more than a page: whether there is a next page, without counting them all.
            found = audit_entries(
                ctx, limit=PER_PAGE + 1, offset=(number - 1) * PER_PAGE, **filters
            )
        except InvalidInput as exc:
            values["error"] = exc.message
            status = 400
        else:
            values["entries"] = found[:PER_PAGE]
            if number > 1:
                values["prev"] = query_string(**filters, page=number - 1)
            if len(found) > PER_PAGE:
                values["next"] = query_string(**filters, page=number + 1)
    return render(
        request,
        "audit.html",
        signed_in,
        title="Audit",
        json_twin=twin,
        status_code=status,
        page=number,
        **values,
    )
