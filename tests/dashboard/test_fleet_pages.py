"""The fleet, models and audit pages in Chromium against the real fleet, and the bounds of
``GET /api/v1/fleet``.

The model here (``fleetpages``) is this file's alone; sites added for the pagination test are
removed at its end (they never enroll, so they stay offline meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import UiFleet, Watched
from tests.deploy.fleet import baseline, traffic
from tests.waiting import wait_for

MODEL = "fleetpages"
TIMEOUT_MS = 30_000
OpenUi = Callable[..., Watched]


def api(fleet: UiFleet, path: str, role: str = "viewer", **params: Any) -> httpx.Response:
    token = fleet.infer if role == "infer" else fleet.tokens[role]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=fleet.hub.url, headers=headers, timeout=30) as http:
        return http.get(path, params=params)


def refused_page(ui: Watched, path: str, status: int) -> None:
    """Open a page that answers ``status`` on purpose: Chromium logs "Failed to load resource"
    for it, which is this test's expectation, not a fault the watcher should report."""
    response = ui.goto(path)
    assert response.status == status
    note = f"status of {status}"
    ui.console_errors[:] = [e for e in ui.console_errors if note not in e]


def fleet_rows(fleet: UiFleet, **params: Any) -> dict[str, Any]:
    answer = api(fleet, "/api/v1/fleet", **params)
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()
    return doc


def model_at(doc: dict[str, Any], site: str) -> dict[str, Any]:
    row = next(s for s in doc["sites"] if s["site"] == site)
    return next((m for m in row["models"] if m["name"] == MODEL), {})


@pytest.fixture(scope="module")
def served(ui_fleet: UiFleet) -> Iterator[UiFleet]:
    """Version 1 of this file's model at every site, with real traffic counted by the hub."""
    baseline(ui_fleet, MODEL)
    with traffic(ui_fleet, MODEL):
        wait_for(
            lambda: all(
                model_at(fleet_rows(ui_fleet), s).get("requests_per_s", 0) > 0
                and model_at(fleet_rows(ui_fleet), s).get("p99_s") is not None
                for s in ("site-a", "site-b", "site-c")
            ),
            timeout=60,
            what="recent traffic of every site in /api/v1/fleet",
        )
        yield ui_fleet


def test_fleet_page_shows_every_site_with_real_figures(served: UiFleet, open_ui: OpenUi) -> None:
    ui = open_ui("viewer")
    for site, region, jurisdiction, provider in (
        ("site-a", "eu-west", "EU", "aws"),
        ("site-b", "us-east", "US", "gcp"),
        ("site-c", "ap-south", "IN", "azure"),
    ):
        row = ui.page.locator(f"tr[data-site='{site}']")
        expect(row).to_contain_text(region, timeout=TIMEOUT_MS)
        expect(row).to_contain_text(jurisdiction)
        expect(row).to_contain_text(provider)
        expect(row.locator(".badge.ok").first).to_have_text("online")
        model = row.locator(f".fleet-model[data-model='{MODEL}']")
        expect(model).to_contain_text("v1")
        expect(model.locator(".badge")).to_have_text("ready")
        cells = row.locator("td.num")
        expect(cells.nth(0)).not_to_have_text("0")  # req/s
        expect(cells.nth(2)).to_contain_text("ms")  # p99
        link = row.locator("td a").first
        expect(link).to_have_attribute("href", f"/ui/performance?site={site}")
    expect(ui.page.locator("#card-online .figure")).to_contain_text("3 / 3")
    expect(ui.page.locator("#card-rate .figure")).not_to_have_text("0")
    expect(ui.page.locator(".twin")).to_have_attribute("href", "/api/v1/fleet?page=1")


def test_selector_filters_and_a_bad_one_says_why(served: UiFleet, open_ui: OpenUi) -> None:
    ui = open_ui("viewer")
    ui.page.fill("#selector", "jurisdiction in (EU,US)")
    ui.page.click("form.filters button[type=submit]")
    expect(ui.page.locator("tr[data-site]")).to_have_count(2, timeout=TIMEOUT_MS)
    expect(ui.page.locator("tr[data-site='site-c']")).to_have_count(0)
    expect(ui.page.locator("#fleet-total")).to_contain_text("2 sites match")

    refused_page(ui, "/ui/fleet?selector=region%3D%3Deu%20west", 400)
    expect(ui.page.locator("#selector-error")).to_contain_text("invalid selector term")
    expect(ui.page.locator("#selector")).to_have_value("region==eu west")


def test_grouped_by_region(served: UiFleet, open_ui: OpenUi) -> None:
    ui = open_ui("viewer")
    ui.page.click("#group-region")
    ui.page.wait_for_url("**group=region*")
    sections = ui.page.locator("section.fleet-section")
    expect(sections).to_have_count(3, timeout=TIMEOUT_MS)
    for region, site in (("eu-west", "site-a"), ("us-east", "site-b"), ("ap-south", "site-c")):
        section = ui.page.locator(f"section[data-region='{region}']")
        expect(section.locator("h2")).to_contain_text("1 site · 1 online · 0 offline")
        expect(section.locator(f"tr[data-site='{site}']")).to_have_count(1)


def test_model_page(served: UiFleet, open_ui: OpenUi) -> None:
    admin = served.admin
    admin.set_alias(MODEL, "production", 1)
    rule = {"name": "fleetpages-spread", "kind": "spread", "label": "provider"}
    admin.apply_policies([{**rule, "min_distinct": 2, "models": [MODEL]}])
    if served.admin.get_model(MODEL).latest_version < 2:  # a per-site variant of v1
        variant = {"fl.job": "job-fleetpages", "fl.site": "site-a", "fl.variant": "personalized"}
        admin.push(served.model(offset=2.0), MODEL, parent=1, tags=variant, training_regions=["EU"])
    try:
        ui = open_ui("viewer", path="/ui/models")
        row = ui.page.locator(f"tr[data-model='{MODEL}']")
        expect(row).to_contain_text("production → v1", timeout=TIMEOUT_MS)
        row.locator("a").first.click()
        ui.page.wait_for_url(f"**/ui/models/{MODEL}")
        expect(ui.page.locator("#model-aliases")).to_contain_text("production → v1")
        version = ui.page.locator("section#v1")
        for site in ("site-a", "site-b", "site-c"):
            expect(version.locator(".model-runs")).to_contain_text(site)
            expect(version.locator(".model-desired")).to_contain_text(site)
        expect(version.locator(".model-signature")).to_contain_text("FP32")
        expect(version.locator(".model-signature")).to_contain_text("X")
        expect(version.locator(".model-lineage")).to_contain_text("per-site variants: site-a=v2")
        variant_row = ui.page.locator("section#v2")
        expect(variant_row.locator(".model-lineage")).to_contain_text("from v1")
        expect(variant_row.locator(".model-lineage")).to_contain_text("job-fleetpages")
        expect(variant_row.locator(".model-lineage")).to_contain_text("personalized for site-a")
        expect(variant_row.locator(".model-runs")).to_contain_text("no site reports it active")
        policy = version.locator("tr[data-policy='fleetpages-spread']")
        expect(policy.locator(".badge")).to_have_text("pass")
        expect(policy).to_contain_text("distinct provider")

        refused_page(ui, "/ui/models/no-such-model", 404)
        expect(ui.page.locator("#model-error")).to_contain_text("does not exist")
    finally:
        admin.remove_policy("fleetpages-spread")


def test_audit_page_lists_sign_in_and_deploy(served: UiFleet, open_ui: OpenUi) -> None:
    ui = open_ui("viewer", path="/ui/audit")
    rows = ui.page.locator("table.audit tbody tr")
    expect(rows.filter(has_text="viewer:victor").filter(has_text="ui.sign_in")).not_to_have_count(
        0, timeout=TIMEOUT_MS
    )
    ui.page.fill("#f-action", "deploy")
    ui.page.click("form.filters button[type=submit]")
    ui.page.wait_for_url("**action=deploy*")
    expect(rows.filter(has_text=f"{MODEL}:1").first).to_be_visible(timeout=TIMEOUT_MS)
    actions = ui.page.locator("table.audit tbody tr[data-action]")
    assert actions.count() >= 1
    assert {a.get_attribute("data-action") for a in actions.all()} == {"deploy"}

    refused_page(ui, "/ui/audit?since=yesterday-ish", 400)
    expect(ui.page.locator("#audit-error")).to_contain_text("since")


def test_audit_api_filters(served: UiFleet) -> None:
    found = api(served, "/api/v1/audit", action="deploy", object=f"{MODEL}:1", since="1h")
    assert found.status_code == 200, found.text
    assert found.json()
    assert all(e["action"] == "deploy" for e in found.json())
    newest, older = (api(served, "/api/v1/audit", limit=1, offset=n).json() for n in (0, 1))
    assert newest[0]["id"] > older[0]["id"]
    assert api(served, "/api/v1/audit", outcome="no-such-outcome").json() == []
    assert api(served, "/api/v1/audit", since="nonsense").status_code == 400
    assert api(served, "/api/v1/audit", offset=-1).status_code == 400


def test_fleet_api_bounds(served: UiFleet) -> None:
    assert api(served, "/api/v1/fleet", per_page=1000).status_code == 400
    assert api(served, "/api/v1/fleet", per_page=0).status_code == 400
    assert api(served, "/api/v1/fleet", page=0).status_code == 400
    assert api(served, "/api/v1/fleet", selector="x" * 2000).status_code == 400
    assert api(served, "/api/v1/fleet", group="country").status_code == 400
    bad = api(served, "/api/v1/fleet", selector="region in ()")
    assert bad.status_code == 400
    assert "empty set" in bad.json()["error"]["message"]
    assert api(served, "/api/v1/fleet", role="operator").status_code == 200
    assert api(served, "/api/v1/fleet", role="infer").status_code == 403
    doc = fleet_rows(served, per_page=2, page=2, selector="region")
    assert (doc["total"], doc["pages"], doc["page"], len(doc["sites"])) == (3, 2, 2, 1)


def test_pagination(served: UiFleet, open_ui: OpenUi) -> None:
    added = [f"page-{i:02d}" for i in range(50)]
    try:
        for name in added:
            served.admin.add_site(name, {"region": "zz-paging", "jurisdiction": "ZZ"})
        ui = open_ui("viewer")
        expect(ui.page.locator("#fleet-total")).to_contain_text("53 sites", timeout=TIMEOUT_MS)
        expect(ui.page.locator("#fleet-total")).to_contain_text("page 1 of 2")
        expect(ui.page.locator("tr[data-site]")).to_have_count(50)
        ui.page.click("#page-next")
        ui.page.wait_for_url("**page=2*")
        expect(ui.page.locator("tr[data-site]")).to_have_count(3, timeout=TIMEOUT_MS)
        expect(ui.page.locator("#card-online .figure")).to_contain_text("3 / 53")
        ui.page.click("#page-prev")
        expect(ui.page.locator("tr[data-site]")).to_have_count(50, timeout=TIMEOUT_MS)
    finally:
        for name in added:
            served.admin.remove_site(name)
