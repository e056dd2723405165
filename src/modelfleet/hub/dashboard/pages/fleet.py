"""The fleet page: every site at a glance, one page of sites at a time, filtered by label
selector and grouped by region (JSON twin: ``/api/v1/fleet`` with the same query)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from modelfleet.errors import InvalidInput
from modelfleet.hub.api.fleet import DEFAULT_PER_PAGE, MAX_PAGE, MAX_SELECTOR_CHARS, fleet_page
from modelfleet.hub.dashboard.render import UiContext, UiSession, render

router = APIRouter(include_in_schema=False)


def page_number(text: str | None, most: int = MAX_PAGE) -> int:
    """``?page=`` as typed in an address bar: anything unreadable is page 1, never an error."""
    try:
        return min(max(1, int(text or "1")), most)
    except ValueError:
        return 1


def query_string(**values: str | int | None) -> str:
    """The page's own link with some parameters changed (empty ones left out)."""
    kept = {k: str(v) for k, v in values.items() if v not in (None, "")}
    return "?" + urlencode(kept) if kept else ""


@router.get("/ui/fleet")
def fleet_page_view(
    request: Request,
    ctx: UiContext,
    signed_in: UiSession,
    selector: Annotated[str, Query(max_length=MAX_SELECTOR_CHARS)] = "",
    page: Annotated[str | None, Query(max_length=16)] = None,
    group: Annotated[str | None, Query(max_length=16)] = None,
) -> HTMLResponse:
    grouping = "region" if group == "region" else None
    number = page_number(page)
    twin = "/api/v1/fleet" + query_string(selector=selector, page=number, group=grouping)
    try:
        view = fleet_page(ctx, selector=selector, page=number, group=grouping)
    except InvalidInput as exc:
        return render(
            request,
            "fleet.html",
            signed_in,
            title="Fleet",
            json_twin=twin,
            status_code=400,
            error=exc.message,
            selector=selector,
            group=grouping,
            view=None,
            sections=[],
            links={},
        )
    sections: list[tuple[str, list[object]]] = []
    for row in view.sites:
        region = row.region or "(none)"
        if grouping and (not sections or sections[-1][0] != region):
            sections.append((region, []))
        elif not sections:
            sections.append(("", []))
        sections[-1][1].append(row)
    links = {
        "prev": query_string(selector=selector, page=number - 1, group=grouping)
        if number > 1
        else None,
        "next": query_string(selector=selector, page=number + 1, group=grouping)
        if number < view.pages
        else None,
        "grouped": query_string(selector=selector, group="region"),
        "flat": query_string(selector=selector),
    }
    return render(
        request,
        "fleet.html",
        signed_in,
        title="Fleet",
        json_twin=twin,
        error="",
        selector=selector,
        group=grouping,
        view=view,
        sections=sections,
        regions={r.region: r for r in view.regions},
        links=links,
        per_page=DEFAULT_PER_PAGE,
    )
