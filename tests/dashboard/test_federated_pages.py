"""The federated pages in Chromium, on a real job run by real site processes.

The shared dashboard fleet's sites have no local data set, so this module starts its own
small fleet (a hub, two plants holding a share of scikit-learn's digits, and a clinic whose
config refuses federated jobs with a reason), runs a three-round FedAvg job to the end,
and checks the job's pages show what the hub stored: rounds, who was asked and answered,
the refusal and its reason, each site's loss per round drawn, the registered result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from modelfleet.federation import wire
from modelfleet.federation.simulation import digits_sites
from modelfleet.federation.specs import ModelSpec, build_onnx, init_weights
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess, wait_http
from tests.conftest import trust_fleet_ca
from tests.dashboard.conftest import Watched, watched_pages
from tests.federation.conftest import fl_hub, write_site_config
from tests.waiting import wait_for

JOB = "ui-digits"
ROUNDS = 3
PLANTS = ("plant-a", "plant-b")
REFUSAL = "ethics board approval pending"


@dataclass
class FLFleet:
    hub: HubProcess
    admin: HubClient
    viewer: str
    sites: dict[str, SiteProcess] = field(default_factory=dict)


@pytest.fixture(scope="module")
def fl_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FLFleet]:
    root = tmp_path_factory.mktemp("ui-fl")
    init = init_hub(root / "hub")
    hub = HubProcess(root / "hub").start(timeout=60)
    trusted = pytest.MonkeyPatch()
    trust_fleet_ca(trusted, hub.ca_file)
    admin = HubClient(hub.url, init.admin_token)
    made = FLFleet(hub, admin, admin.create_token("vera", "viewer").token)
    _, virtual, _ = digits_sites(2, non_iid=False)
    configs = {
        name: write_site_config(root, name, virtual[i].x, virtual[i].y)
        for i, name in enumerate(PLANTS)
    }
    configs["clinic"] = write_site_config(
        root, "clinic", virtual[1].x, virtual[1].y, participate=False, reason=REFUSAL
    )
    try:
        for name, config in configs.items():
            created = admin.add_site(name, {"region": "eu-west"})
            made.sites[name] = SiteProcess(
                root / f"site-{name}",
                hub.url,
                created["enrollment_token"],
                extra_env={
                    "MODELFLEET_SITE_CONFIG_FILE": str(config),
                    "MODELFLEET_SITE_RETRY_MAX_S": "1",
                    "MODELFLEET_SITE_FL_POLL_S": "5",
                },
            ).start(wait_ready=False)
        for site in made.sites.values():
            wait_http(f"{site.url}/v2/health/ready", 60, site.proc)
        spec = ModelSpec(family="softmax", features=64, classes=10)
        path = root / "init.onnx"
        onnx.save(build_onnx(spec, init_weights(spec)), str(path))
        admin.push(path, "digits")
        wait_for(lambda: len(admin.get_federation_consents()) == 3, what="every consent")
        wait_for(lambda: all(s["online"] for s in admin.list_sites()), what="sites online")
        admin.start_federated_job(
            {
                "id": JOB, "model": "digits", "data": "digits", "rounds": ROUNDS,
                "min_sites": 2, "lr": 0.5, "round_timeout_s": 120,
            }
        )  # fmt: skip
        wait_for(
            lambda: admin.get_federated_job(JOB)["state"] in ("completed", "failed"),
            what=f"job {JOB} finished",
            timeout=240,
        )
        yield made
    finally:
        for site in made.sites.values():
            site.stop()
        admin.close()
        hub.stop()
        trusted.undo()


@pytest.fixture
def open_fl_ui(browser: Any, fl_fleet: FLFleet) -> Iterator[Callable[[str], Watched]]:
    """Like ``open_ui``, signed in as a viewer of this module's hub."""
    with watched_pages(browser, fl_fleet.hub.url) as open_page:
        yield lambda path: open_page(fl_fleet.viewer, path)


def test_job_list_and_page_show_rounds_participation_and_loss(
    fl_fleet: FLFleet, open_fl_ui: Callable[[str], Watched]
) -> None:
    job = fl_fleet.admin.get_federated_job(JOB)
    assert job["state"] == "completed", job["message"]
    ui = open_fl_ui("/ui/federated")
    page = ui.page
    row = page.locator(f'tr[data-job="{JOB}"]')
    assert "completed" in row.inner_text()
    assert f"{ROUNDS} / {ROUNDS}" in row.inner_text()
    assert "2 / 3" in row.inner_text()  # eligible / matched: the clinic refused
    row.locator("a").first.click()
    page.wait_for_url(f"**/ui/federated/{JOB}")

    assert page.locator('[data-state="completed"]').count() == 1
    left_out = page.locator('table.left-out tr[data-site="clinic"]').inner_text()
    assert "refused" in left_out
    assert REFUSAL in left_out
    rounds = page.locator("table.participation tbody tr")
    assert rounds.count() == ROUNDS
    for number in range(1, ROUNDS + 1):
        line = page.locator(f'table.participation tr[data-round="{number}"]')
        assert "2 / 2" in line.inner_text()
        for plant in PLANTS:
            assert line.locator(f'td[data-site="{plant}"]').get_attribute("data-part") == "update"
        assert line.locator('td[data-site="clinic"]').get_attribute("data-part") == "not-asked"

    result = page.locator(".figure.result a")
    assert result.inner_text() == f"digits:{job['result_version']}"
    assert result.get_attribute("href") == "/ui/models/digits"

    page.wait_for_selector('[data-metric="eval_loss"] canvas', timeout=30_000)
    for metric in ("eval_loss", "eval_accuracy", "train_loss"):
        chart = page.locator(f'[data-metric="{metric}"]')
        assert chart.locator("canvas").count() == 1, metric
        assert chart.locator(".u-legend").inner_text().count("plant-") == 2
    doc = page.locator("#fl-metric-0").inner_text()
    assert '"x": [1, 2, 3]' in doc or '"x":[1,2,3]' in doc.replace(" ", "")
    assert page.locator("a.twin").get_attribute("href") == f"/api/v1/federation/jobs/{JOB}"


def test_unknown_job_is_a_404_page(fl_fleet: FLFleet, open_fl_ui: Callable[[str], Watched]) -> None:
    ui = open_fl_ui("/ui/federated")
    missing = ui.page.request.get(f"{ui.hub}/ui/federated/no-such-job")
    assert missing.status == 404
    assert "no-such-job" in missing.text()


def test_refusals_and_variants_in_process(hub_factory, tmp_path: Path) -> None:
    """A refusal inside a round (with its reason) and per-site variants, on an in-process
    hub whose sites answer through the API: the cases the real job above does not hit."""
    consents = {s: {"participate": True, "datasets": ["iris"]} for s in ("a", "b")}
    hub, tokens, spec = fl_hub(hub_factory, tmp_path, consents)
    job = {"model": "iris", "data": "iris", "rounds": 1, "min_sites": 2, "id": "j-ui",
           "personalize_epochs": 2}  # fmt: skip
    hub.client.post("/api/v1/federation/jobs", json=job, headers=hub.headers()).raise_for_status()

    def post(site: str, number: int) -> dict[str, Any]:
        update = wire.pack(
            {"attempt": 1, "num_examples": 10, "metrics": {"train_loss": 0.5 + number}},
            {"delta": np.full(spec.size(), 0.1, np.float32)},
        )
        url = f"/api/v1/federation/jobs/j-ui/rounds/{number}/updates"
        answer = hub.client.post(url, content=update, headers=hub.headers(tokens[site]))
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    post("a", 1)
    post("b", 1)
    hub.ctx.federation.advance("j-ui")
    post("a", 2)
    refused = hub.client.post(
        "/api/v1/federation/jobs/j-ui/rounds/2/refusals",
        json={"attempt": 1, "reason": "no time today"},
        headers=hub.headers(tokens["b"]),
    )
    assert refused.status_code == 200, refused.text
    hub.ctx.federation.advance("j-ui")
    assert hub.ctx.federation.job("j-ui").state == "completed"

    signed = hub.client.post(
        "/ui/login",
        data={"token": hub.token("viewer"), "next": "/ui/federated"},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert signed.status_code == 303, signed.text
    page = hub.client.get("/ui/federated/j-ui")
    assert page.status_code == 200
    html = page.text
    assert 'data-site="b" data-part="refused"' in html
    assert "no time today" in html
    assert 'data-variant="a"' in html
    assert 'href="/ui/models/iris">iris:2</a>' in html
    assert 'data-metric="train_loss"' in html
    listed = hub.client.get("/ui/federated").text
    assert 'href="/ui/federated/j-ui"' in listed
    assert "1 / 1" in listed
    assert "+ personalization done" in listed
    assert "(personalization: each site fine-tunes its variant)" in html
