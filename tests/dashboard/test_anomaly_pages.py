"""The anomalies page and the fleet page's anomaly badge, from a real fault: a sensor at one
site that sticks at one value while the others keep varying."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import httpx
import numpy as np
from playwright.sync_api import expect

from tests.dashboard.conftest import UiFleet, Watched
from tests.deploy.fleet import baseline, served
from tests.waiting import wait_for

MODEL = "ui-anomaly-press"
STUCK_SITE = "site-a"


@contextmanager
def sensor_traffic(fleet: UiFleet, stuck: dict[str, bool]) -> Iterator[None]:
    """Real requests to every site with varying inputs; while ``stuck[site]`` is set, that
    site's first input reads one value (a stuck sensor)."""
    halt = threading.Event()

    def run(site: str, url: str) -> None:
        rng = np.random.default_rng(abs(hash(site)) % 2**32)
        auth = {"Authorization": f"Bearer {fleet.infer}"}
        with httpx.Client(
            timeout=10,
            headers=auth,
            verify=ssl.create_default_context(cafile=str(fleet.hub.ca_file)),
        ) as http:
            while not halt.is_set():
                row = rng.normal(size=4).round(3).tolist()
                if stuck.get(site):
                    row[0] = 21.5
                body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": row}]}
                with suppress(httpx.TransportError):
                    http.post(f"{url}/v2/models/{MODEL}/infer", json=body)
                halt.wait(0.03)

    threads = [threading.Thread(target=run, args=(n, s.url)) for n, s in fleet.sites.items()]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        halt.set()
        for t in threads:
            t.join()


def test_a_stuck_sensor_shows_on_the_anomalies_and_fleet_pages(
    ui_fleet: UiFleet, open_ui: Callable[..., Watched]
) -> None:
    baseline(ui_fleet, MODEL)
    # 10 s buckets (the default is 60 s): a stuck run is judged when its bucket settles.
    ui_fleet.admin.set_anomaly_settings(MODEL, {"bucket_s": 10})
    stuck: dict[str, bool] = {}
    with sensor_traffic(ui_fleet, stuck):
        # Varying inputs first (a sensor is "stuck" only against its own varied history),
        # then the stuck value at one site until the hub's detector reports it.
        wait_for(
            lambda: all(served(ui_fleet, site, MODEL, 1) >= 200 for site in ui_fleet.sites),
            "varied traffic counted at the three sites",
            120,
        )
        stuck[STUCK_SITE] = True

        def stuck_reported() -> bool:
            found = ui_fleet.admin.anomalies(model=MODEL, open_only=True)["anomalies"]
            return any(a["site"] == STUCK_SITE and a["metric"].startswith("stuck:") for a in found)

        wait_for(stuck_reported, "the stuck sensor reported by the hub", 120)
        found = ui_fleet.admin.anomalies(model=MODEL, open_only=True)["anomalies"]
        stuck_metrics = {a["metric"] for a in found if a["metric"].startswith("stuck:")}
        assert {a["site"] for a in found if a["metric"].startswith("stuck:")} == {STUCK_SITE}

        ui = open_ui("viewer", path=f"/ui/anomalies?model={MODEL}&open=true")
        page = ui.page
        rows = page.locator(f"#anomalies tr[data-site='{STUCK_SITE}']")
        expect(rows.first).to_be_visible()
        shown = {rows.nth(i).get_attribute("data-metric") for i in range(rows.count())}
        assert stuck_metrics <= shown
        assert int(page.inner_text("#open-count")) >= 1
        # Only the stuck site has a stuck-sensor row.
        for other in ("site-b", "site-c"):
            other_rows = page.locator(f"#anomalies tr[data-site='{other}']")
            for i in range(other_rows.count()):
                assert not str(other_rows.nth(i).get_attribute("data-metric")).startswith("stuck:")

        # The fleet page carries the badge on that site's row, linking to the anomalies.
        ui.goto("/ui/fleet")
        badge = page.locator(f"tr[data-site='{STUCK_SITE}'] a.anomaly-badge")
        expect(badge.first).to_be_visible()
        assert "anomal" in badge.first.inner_text()
        badge.first.click()
        page.wait_for_url("**/ui/anomalies?*")
        expect(page.locator(f"#anomalies tr[data-site='{STUCK_SITE}']").first).to_be_visible()
