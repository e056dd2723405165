"""The Approve button in Chromium against a real fleet: a rollout that waits for approval
before any site moves shows why and offers Approve (not Resume or Promote) to an operator,
none to a viewer; the operator's click goes through the API (CSRF, role, audit) and the
rollout runs to the end on its page without a reload."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import expect

from tests.dashboard.conftest import UiFleet, Watched
from tests.deploy.fleet import deploy, settle
from tests.waiting import wait_for

MODEL = "approval-pump"  # unique to this file: the fleet is shared by the package
LIVE_MS = 90_000


def test_an_operator_approves_a_waiting_rollout_from_its_page(
    open_ui: Callable[..., Watched], ui_fleet: UiFleet
) -> None:
    ui_fleet.admin.push(ui_fleet.model(offset=1.0), MODEL, training_regions=["global"])
    started = deploy(ui_fleet, f"{MODEL}:1", strategy={"bake_s": 0, "approval": {"wave": 1}})
    rid = started["rollout"]["id"]

    viewer = open_ui("viewer", path=f"/ui/rollouts/{rid}")
    expect(viewer.page.locator("#rollout-approval")).to_contain_text("awaiting approval")
    assert viewer.page.locator(".rollout-actions button").count() == 0

    ui = open_ui("operator", path=f"/ui/rollouts/{rid}")
    page = ui.page
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    expect(page.locator("#rollout-approval")).to_contain_text(f"modelfleet rollout approve {rid}")
    expect(page.locator(".wave[data-wave='1'] .wave-status")).to_have_text("awaiting approval")
    buttons = page.locator(".rollout-actions button")
    expect(buttons).to_have_count(3)
    assert [buttons.nth(i).get_attribute("data-action") for i in range(3)] == [
        "approve",
        "abort",
        "rollback",
    ]
    page.once("dialog", lambda dialog: dialog.accept())  # the confirm names the wave
    page.locator(".rollout-actions button[data-action='approve']").click()
    expect(page.locator("#rollout-state")).to_have_text("succeeded", timeout=LIVE_MS)
    expect(page.locator("#rollout-approved")).to_contain_text("approved by operator:")
    assert page.evaluate("window.__sameDocument") is True
    assert settle(ui_fleet, rid, ("succeeded",))["approval"]["approved_by"].startswith("operator:")
    wait_for(
        lambda: any(
            e.action == "rollout.approve" and e.object == rid and e.outcome == "ok"
            for e in ui_fleet.admin.list_audit(actor="operator:olga")
        ),
        what="the approval in the audit",
    )
