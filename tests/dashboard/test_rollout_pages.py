"""The rollouts and performance pages in Chromium against a real fleet: a canary rollout
baking under traffic moves on its page without a reload, an operator pauses and resumes it
from the page's buttons (audited by the API), a viewer sees no button and is refused when
it posts anyway; the performance page draws every site's figures."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import expect

from tests.dashboard.conftest import UiFleet, Watched
from tests.deploy.fleet import CANARY, baseline, deploy, settle, traffic, wait_served
from tests.waiting import wait_for

MODEL = "rp-pump"  # unique to this file: the fleet is shared by the package
#: Generous: the fleet's sites ship a window every half second, waves bake ten seconds.
LIVE_MS = 90_000


def test_rollout_page_moves_live_and_an_operator_pauses_and_resumes_it(
    open_ui: Callable[..., Watched], ui_fleet: UiFleet
) -> None:
    baseline(ui_fleet, MODEL)
    ui_fleet.admin.push(ui_fleet.model(offset=2.0), MODEL, training_regions=["global"])
    with traffic(ui_fleet, MODEL):
        wait_served(ui_fleet, MODEL, 1, 20, tuple(ui_fleet.sites))
        started = deploy(
            ui_fleet,
            f"{MODEL}:2",
            strategy={**CANARY, "bake_s": 10},
            gates={"min_requests": 20, "max_error_rate": 0.5},
        )
        rid = started["rollout"]["id"]

        listing = open_ui("viewer", path="/ui/rollouts")
        row = listing.page.locator(f"tr[data-rollout='{rid}']")
        expect(row).to_contain_text("running")
        expect(row).to_contain_text("v1 → v2")
        row.get_by_role("link", name=rid).click()
        listing.page.wait_for_url(f"**/ui/rollouts/{rid}")
        # A viewer: the waves and gates, no button; the API refuses a forced post.
        expect(listing.page.locator(".rollout-timeline .wave")).to_have_count(3)
        gate = listing.page.locator("table.rollout-gates tr[data-gate='min_requests']")
        expect(gate).to_be_visible()
        expect(gate).to_be_visible()
        assert listing.page.locator(".rollout-actions button").count() == 0
        status = listing.page.evaluate(
            """async (rid) => (await fetch(`/api/v1/rollouts/${rid}/pause`, {
                method: "POST", headers: {"X-CSRF-Token": window.modelfleet.csrf()}})).status""",
            rid,
        )
        assert status == 403
        listing.console_errors.clear()  # the browser logs the refused post: expected

        ui = open_ui("operator", path=f"/ui/rollouts/{rid}")
        page = ui.page
        page.evaluate("window.__sameDocument = true")  # gone if the page reloads
        expect(page.locator(".chart canvas").first).to_be_visible(timeout=LIVE_MS)
        # The canary wave passes its bake: the page moves to wave 2 by itself.
        expect(page.locator("#rollout-wave")).to_have_text("2 / 3", timeout=LIVE_MS)
        expect(page.locator(".wave[data-wave='1'] .wave-status")).to_have_text("done")
        assert page.evaluate("window.__sameDocument") is True

        page.locator(".rollout-actions button[data-action='pause']").click()
        expect(page.locator("#rollout-state")).to_have_text("paused", timeout=LIVE_MS)
        expect(page.locator(".rollout-actions button[data-action='resume']")).to_be_visible()
        page.locator(".rollout-actions button[data-action='resume']").click()
        expect(page.locator("#rollout-state")).to_have_text("running", timeout=LIVE_MS)
        # The viewer's page moved too, and still shows no button.
        expect(listing.page.locator("#rollout-state")).to_have_text(
            re.compile("running|succeeded"), timeout=LIVE_MS
        )
        assert listing.page.locator(".rollout-actions button").count() == 0
        settle(ui_fleet, rid, ("succeeded",))
        expect(page.locator("#rollout-state")).to_have_text("succeeded", timeout=LIVE_MS)

    def audited() -> list[str]:
        return [
            e.action
            for e in ui_fleet.admin.list_audit(actor="operator:olga")
            if e.object == rid and e.outcome == "ok"
        ]

    wait_for(lambda: {"rollout.pause", "rollout.resume"} <= set(audited()), what="the audit")


def test_performance_page_compares_the_three_sites(
    open_ui: Callable[..., Watched], ui_fleet: UiFleet
) -> None:
    name = "perf-pump"
    baseline(ui_fleet, name)
    with traffic(ui_fleet, name):
        wait_served(ui_fleet, name, 1, 20, tuple(ui_fleet.sites))
        ui = open_ui("viewer", path="/ui/performance")
        page = ui.page
        ui.goto(f"/ui/performance?model={name}&range=1h")
        for site in ui_fleet.sites:
            cell = page.locator(f"table.performance-table tr[data-site='{site}'] td.requests")
            assert int(cell.inner_text().replace(",", "")) > 0, site
        expect(page.locator(".performance-chart .chart canvas")).to_have_count(5)
        # One line per site in each chart's legend (uPlot draws the labels).
        expect(page.locator(".performance-chart").first.locator(".u-legend")).to_contain_text(
            "site-c"
        )
        # The fleet page's link: one site only.
        ui.goto(f"/ui/performance?model={name}&site=site-b")
        expect(page.locator("table.performance-table tbody tr")).to_have_count(1)
        for bad, status in ((f"model={name}&range=2h", 400), ("model=no-such-model", 404)):
            answer = ui.goto(f"/ui/performance?{bad}")
            assert answer is not None
            assert answer.status == status
            expect(page.locator("p.error")).to_be_visible()
        ui.console_errors.clear()  # the browser logs the 400 and 404 documents: expected
