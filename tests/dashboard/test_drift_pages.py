"""The drift pages in Chromium against the shared fleet: a model with a reference profile,
real traffic whose "flow" feature is shifted at one site, the heat map that marks it and
the feature page the marked cell links to."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

import httpx
import numpy as np
import pytest

from modelfleet.monitoring.profiles import DatasetProfile, profile_array
from tests.dashboard.conftest import UiFleet, Watched
from tests.waiting import wait_for

MODEL = "drift-pump"
HEADER = ["temp", "pressure", "flow", "vibration"]
MEANS, SCALES = [0, 5, 10, -3], [1, 2, 0.5, 3]
SHIFTED = "site-c"


def _rows(rng: np.random.Generator, shift: float) -> np.ndarray:
    data = rng.normal(loc=MEANS, scale=SCALES, size=(3000, 4))
    data[:, 2] += shift * 0.5  # one standard deviation of "flow"
    return data.astype(np.float32)


def _send(url: str, token: str, rows: np.ndarray) -> None:
    with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {token}"}) as http:
        for batch in rows.reshape(150, 20, 4):
            body = {
                "inputs": [
                    {
                        "name": "X",
                        "datatype": "FP32",
                        "shape": [20, 4],
                        "data": batch.ravel().tolist(),
                    }
                ]
            }
            response = http.post(f"{url}/v2/models/{MODEL}/infer", json=body)
            assert response.status_code == 200, response.text


def _ready(url: str, token: str) -> bool:
    try:
        got = httpx.get(
            f"{url}/v2/models/{MODEL}/ready",
            timeout=2,
            headers={"Authorization": f"Bearer {token}"},
        )
    except httpx.TransportError:
        return False
    return got.status_code == 200


@pytest.fixture(scope="module")
def drifted(ui_fleet: UiFleet) -> UiFleet:
    """``drift-pump:1`` at every site with traffic counted; ``flow`` shifted at site-c."""
    rng = np.random.default_rng(11)
    fleet = ui_fleet
    fleet.admin.push(fleet.model(), MODEL, training_regions=["global"])
    reference = profile_array(rng.normal(loc=MEANS, scale=SCALES, size=(5000, 4)), labels=HEADER)
    fleet.admin.set_reference_profile(MODEL, 1, reference.to_dict())
    for name, site in fleet.sites.items():
        fleet.admin.assign(name, f"{MODEL}:1")
        wait_for(lambda s=site: _ready(s.url, fleet.infer), what=f"{name} serving {MODEL}")
    for name, site in fleet.sites.items():
        _send(site.url, fleet.infer, _rows(rng, 1.0 if name == SHIFTED else 0.0))

    def flagged() -> bool:
        results = {r.site: r for r in fleet.admin.get_drift(MODEL, version=1).results}
        return (
            set(results) == set(fleet.sites)
            and all(r.drift is not None for r in results.values())
            and results[SHIFTED].drifted == ["X[2]"]
        )

    wait_for(flagged, what=f"the hub flagging X[2] of {MODEL} at {SHIFTED}")
    return fleet


def test_heatmap_marks_the_drifted_cell_and_links_to_its_feature(
    drifted: UiFleet, open_ui: Callable[..., Watched]
) -> None:
    ui = open_ui("viewer", path="/ui/drift")
    ui.goto(f"/ui/drift?model={MODEL}&stat=psi&version=1")
    page = ui.page
    rows = page.locator("table.heatmap tbody tr")
    assert sorted(rows.evaluate_all("els => els.map(e => e.dataset.site)")) == sorted(drifted.sites)
    features = page.locator("table.heatmap thead th.feature")
    assert features.count() == 4
    assert "flow" in features.nth(2).inner_text()
    for site in drifted.sites:
        cells = page.locator(f'tr[data-site="{site}"] td.cell')
        assert cells.count() == 4
        for text in cells.all_inner_texts():
            assert float(text.replace("⚑", "").strip()) >= 0  # a figure in every cell
    marked = page.locator('td.cell[data-drifted="true"]')
    assert marked.count() == 1
    cell = page.locator(f'tr[data-site="{SHIFTED}"] td.cell[data-feature="X[2]"]')
    assert cell.get_attribute("data-drifted") == "true"
    assert "heat-none" not in (cell.get_attribute("class") or "")
    title = cell.get_attribute("title") or ""
    assert "threshold >= 0.1" in title
    assert "drifted" in title
    calm = page.locator('tr[data-site="site-a"] td.cell[data-feature="X[2]"]')
    assert calm.get_attribute("data-drifted") == "false"

    # KS shows D, JS does not exist for numeric features
    page.goto(f"{ui.hub}/ui/drift?model={MODEL}&stat=js&version=1")
    assert page.locator("td.cell.heat-none").count() == 12
    assert "does not exist for a numeric feature" in (
        page.locator("td.cell").first.get_attribute("title") or ""
    )
    page.goto(f"{ui.hub}/ui/drift?model={MODEL}&stat=psi&version=1")
    page.select_option("select[name=version]", "")  # the picker's "every version"
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/ui/drift?*version=*")
    assert page.locator("table.heatmap tbody tr").count() == 3
    assert page.locator("p.error").count() == 0
    page.goto(f"{ui.hub}/ui/drift?model={MODEL}&stat=psi&version=1")

    page.locator(f'tr[data-site="{SHIFTED}"] td.cell[data-feature="X[2]"] a').click()
    page.wait_for_url(f"**/ui/drift/{MODEL}/{SHIFTED}/X%5B2%5D*")
    page.wait_for_selector("[data-xy-chart] canvas", timeout=30_000)
    assert page.locator("[data-xy-chart] canvas").count() >= 2
    assert "sketches hold" in page.locator("[data-approximate]").inner_text()
    assert "rank error" in page.locator("[data-approximate]").inner_text()
    for side in ("reference", "current"):
        count = page.locator(f'tr[data-side="{side}"] td.count').inner_text()
        assert int(count.replace(",", "")) > 0, side
    assert page.locator('[data-verdict="drift"]').count() == 1
    assert "flow" in page.locator(".cards").inner_text()
    twin = page.locator("a.twin").get_attribute("href") or ""
    assert twin.startswith(f"/api/v1/telemetry/drift/{MODEL}/features/X%5B2%5D?site={SHIFTED}")


def test_drift_page_bad_statistic_and_unknown_feature(
    drifted: UiFleet, open_ui: Callable[..., Watched]
) -> None:
    ui = open_ui("viewer", path="/ui/drift")
    assert ui.page.locator("select[name=model] option").count() >= 1
    bad = ui.page.request.get(f"{ui.hub}/ui/drift?model={MODEL}&stat=chi2")
    assert bad.status == 400
    assert "unknown statistic" in bad.text()
    missing = ui.page.request.get(f"{ui.hub}/ui/drift/{MODEL}/site-a/nope?version=1")
    assert missing.status == 404
    assert "&#39;nope&#39;" in missing.text() or "'nope'" in missing.text()


def test_a_categorical_feature_in_process(hub_factory, tiny_onnx) -> None:
    """A categorical feature (JS distance, frequent items) and a numeric one beside it, on
    an in-process hub fed one window through the API: the kind the real fleet's FP32 model
    cannot send."""
    hub = hub_factory()
    hub.client.post(
        "/api/v1/models/pump/versions", content=tiny_onnx().read_bytes(), headers=hub.headers()
    ).raise_for_status()
    rng = np.random.default_rng(2)
    reference = DatasetProfile()
    reference.update_column("mode", np.array(["auto"] * 800 + ["manual"] * 200, dtype=object))
    reference.update_column("speed", rng.normal(size=1000))
    hub.client.put(
        "/api/v1/models/pump/versions/1/reference-profile",
        json=reference.to_dict(),
        headers=hub.headers(),
    ).raise_for_status()
    created = hub.client.post(
        "/api/v1/sites", json={"name": "plant-x", "labels": {}}, headers=hub.headers()
    ).json()
    site = hub.client.post("/api/v1/enroll", json={"token": created["enrollment_token"]})
    current = DatasetProfile()
    current.update_column("mode", np.array(["auto"] * 100 + ["manual"] * 400, dtype=object))
    current.update_column("speed", rng.normal(size=500))
    now = time.time()
    window = {
        "id": uuid.uuid4().hex, "model": "pump", "version": 1, "start": now - 5, "end": now,
        "requests": 500, "latency": {"4": 500}, "inputs": current.to_dict()["columns"],
    }  # fmt: skip
    hub.client.post(
        "/api/v1/sites/plant-x/telemetry",
        json={"batch_id": uuid.uuid4().hex, "spool_id": "s", "windows": [window]},
        headers=hub.headers(site.json()["token"]),
    ).raise_for_status()
    signed = hub.client.post(
        "/ui/login",
        data={"token": hub.token("viewer"), "next": "/ui/drift"},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert signed.status_code == 303, signed.text

    heat = hub.client.get("/ui/drift", params={"stat": "js"})
    assert heat.status_code == 200
    mode = re.search(r'<td class="cell (heat-\w+)( drifted)?" data-feature="mode"', heat.text)
    assert mode is not None
    assert mode.group(1) in {"heat-6", "heat-7", "heat-8", "heat-9"}  # past the threshold
    assert mode.group(2) == " drifted"
    assert re.search(r'<td class="cell heat-none" data-feature="speed"', heat.text)
    psi = hub.client.get("/ui/drift", params={"stat": "psi"}).text
    assert "PSI does not exist for a categorical feature (JS distance does)" in psi

    page = hub.client.get("/ui/drift/pump/plant-x/mode", params={"version": 1, "stat": "js"})
    assert page.status_code == 200
    assert "frequent-items sketch" in page.text
    cells = r'<td class="num">([\d,]+)</td><td class="num">[^<]*</td>'
    rows = re.findall(r"<tr><td>(\w+)</td>" + cells * 2, page.text)
    assert rows == [("auto", "800", "100"), ("manual", "200", "400")]
    assert "data-xy-chart" not in page.text
    twin = hub.client.get("/api/v1/telemetry/drift/pump/features/mode", params={"site": "plant-x"})
    assert twin.status_code == 200, twin.text
    assert twin.json()["kind"] == "categorical"
    assert twin.json()["current"]["error"] > 0
    assert [i["item"] for i in twin.json()["items"]] == ["auto", "manual"]
    assert twin.json()["drift"]["js"] >= 0.1
    bad_name = hub.client.get("/ui/drift", params={"model": "../x"})
    assert bad_name.status_code == 400
    bad_version = hub.client.get("/ui/drift", params={"version": "abc"})
    assert bad_version.status_code == 400
    assert "version must be a number" in bad_version.text
    assert hub.client.get("/ui/drift", params={"version": ""}).status_code == 200
