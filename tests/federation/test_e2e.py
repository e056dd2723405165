"""A real hub and real site processes: a federated job end to end, with faults.

One fleet serves the whole story to keep CI time low: a refusing site is never sent a
task and is listed with its reason; the hub is SIGKILLed mid-job and restarted, the job
completes; a site killed mid-round lets the round close at its deadline with the others
and rejoins later; the registered result deploys like any version and its ONNX outputs
equal the spec-based numpy model's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelfleet.federation.simulation import digits_sites
from modelfleet.federation.specs import ModelSpec, init_weights, predict_proba, read_onnx
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess, wait_http
from tests.federation.conftest import write_site_config


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[HubProcess, HubClient, dict[str, SiteProcess]]]:
    init = init_hub(tmp_path / "hub")
    hub = HubProcess(tmp_path / "hub").start()
    admin = HubClient(hub.url, init.admin_token)
    sites: dict[str, SiteProcess] = {}
    _, virtual, _ = digits_sites(3, non_iid=False)
    configs = {
        "plant-a": write_site_config(tmp_path, "plant-a", virtual[0].x, virtual[0].y),
        "plant-b": write_site_config(tmp_path, "plant-b", virtual[1].x, virtual[1].y),
        "plant-c": write_site_config(tmp_path, "plant-c", virtual[2].x, virtual[2].y),
        "clinic": write_site_config(
            tmp_path,
            "clinic",
            virtual[2].x,
            virtual[2].y,
            participate=False,
            reason="ethics board approval pending",
        ),
    }
    try:
        for name, config in configs.items():
            created = admin.add_site(name, {"region": "eu-west"})
            sites[name] = SiteProcess(
                tmp_path / f"site-{name}",
                hub.url,
                created["enrollment_token"],
                extra_env={
                    "MODELFLEET_SITE_CONFIG_FILE": str(config),
                    "MODELFLEET_SITE_RETRY_MAX_S": "1",
                    "MODELFLEET_SITE_FL_POLL_S": "5",
                },
                log_level="info",
            ).start(wait_ready=False)
        for site in sites.values():
            wait_http(f"{site.url}/v2/health/ready", 60, site.proc)
        yield hub, admin, sites
    finally:
        for site in sites.values():
            site.stop()
        admin.close()
        hub.stop()


def _push_spec_model(admin: HubClient, tmp_path: Path) -> None:
    import onnx

    from modelfleet.federation.specs import build_onnx

    spec = ModelSpec(family="softmax", features=64, classes=10)
    path = tmp_path / "init.onnx"
    onnx.save(build_onnx(spec, init_weights(spec)), str(path))
    admin.push(path, "digits")


ROUNDS = 250


def _job(admin: HubClient, job_id: str) -> dict:
    return admin.federated_job(job_id)


def test_federated_job_across_site_processes_with_faults(fleet, tmp_path: Path) -> None:
    hub, admin, sites = fleet
    _push_spec_model(admin, tmp_path)
    wait_for(lambda: len(admin.federation_consents()) == 4, 20, "every site's consent declaration")
    wait_for(lambda: all(s["online"] for s in admin.list_sites()), 20, "all sites online")

    started = time.monotonic()
    job = admin.start_federated_job(
        {
            "id": "digits-e2e",
            "model": "digits",
            "sites": "region=eu-west",
            "data": "digits",
            # Rounds take tens of milliseconds: enough of them that the job is still
            # running when the killed site has restarted and rejoined.
            "rounds": ROUNDS,
            "min_sites": 2,
            "local_epochs": 2,
            "lr": 0.5,
            "round_timeout_s": 3,
            "alias": "candidate",
            "personalize_epochs": 2,
        }
    )
    assert job["sites"]["clinic"] == {
        "status": "refused",
        "reason": "site config refuses federated jobs: ethics board approval pending",
    }

    # Hub SIGKILLed mid-job, restarted on the same data directory: the job goes on.
    wait_for(lambda: _job(admin, "digits-e2e")["round"] >= 2, 30, "two rounds")
    hub.kill()
    time.sleep(0.5)
    hub.start()
    wait_for(lambda: _job(admin, "digits-e2e")["round"] >= 3, 30, "progress after restart")

    # A site killed mid-round: the round closes at its deadline with the two others.
    killed_at_round = _job(admin, "digits-e2e")["round"] + 1
    sites["plant-c"].kill()
    wait_for(
        lambda: _job(admin, "digits-e2e")["round"] >= killed_at_round + 1, 30, "round without c"
    )
    sites["plant-c"].start()
    wait_for(lambda: _job(admin, "digits-e2e")["state"] == "completed", 60, "job completed")
    print(f"{ROUNDS}-round job, hub restart, site crash: {time.monotonic() - started:.1f} s")

    final = _job(admin, "digits-e2e")
    *rounds, personalization = final["round_details"]
    assert personalization["round"] == ROUNDS + 1
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    assert all(r["state"] == "closed" for r in rounds)
    assert all("clinic" not in r["selected"] for r in rounds)
    straggled = [r for r in rounds if "plant-c" in r["stragglers"]]
    assert straggled, "the killed site must be recorded as a straggler"
    assert all(r["metrics"]["num_sites"] >= 2 for r in rounds)
    # The site rejoined: it contributed to a round after the one it missed.
    last_missed = max(r["round"] for r in straggled)
    rejoined = [
        r["round"]
        for r in rounds
        if r["round"] > last_missed
        for u in r["updates"]
        if u["site"] == "plant-c" and u["kind"] == "update"
    ]
    assert rejoined, "plant-c never rejoined"
    print(f"plant-c missed up to round {last_missed}, contributed again from {rejoined[0]}")
    assert rounds[-1]["metrics"]["eval_accuracy"] > rounds[0]["metrics"]["eval_accuracy"]
    # The site's own log says what left it each round: counts, metrics, one delta.
    site_log = (tmp_path / "site-plant-a.log").read_text()
    assert "federated job digits-e2e round 1: sent " in site_log
    assert "examples of 'digits' -> a delta of 650 values" in site_log
    # A late update for a closed round is refused.
    from modelfleet.site.state import SiteState

    with SiteState(tmp_path / "site-plant-a" / "state.db") as state:
        creds = state.load_credentials()
    assert creds is not None
    late = httpx.post(
        f"{hub.url}/api/v1/federation/jobs/digits-e2e/rounds/1/refusals",
        json={"attempt": 1, "reason": "late"},
        headers={"Authorization": f"Bearer {creds.token}"},
    )
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "round_closed"

    # The result is a normal signed version: lineage recorded, deployable, and its ONNX
    # outputs equal the spec-based numpy model's predictions.
    version = final["result_version"]
    record = admin.resolve("digits@candidate")
    assert record["version"] == version == 2
    assert record["tags"]["fl.job"] == "digits-e2e"
    assert record["parent_version"] == 1
    admin.assign("plant-a", "digits@candidate")
    x = digits_sites(3, non_iid=False)[2][0][:5]

    def served(site: str) -> bool:
        body = {
            "inputs": [
                {
                    "name": "X",
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "data": x.ravel().tolist(),
                }
            ],
            "outputs": [{"name": "probabilities"}],
        }
        response = httpx.post(f"{sites[site].url}/v2/models/digits/infer", json=body)
        if response.status_code != 200:
            return False
        served.out = np.asarray(response.json()["outputs"][0]["data"], np.float32)  # type: ignore[attr-defined]
        return True

    wait_for(lambda: served("plant-a"), 30, "the federated result served at plant-a")
    import onnx

    def predictions(ref: str) -> np.ndarray:
        pulled = tmp_path / f"{ref.replace('@', '-').replace(':', '-')}.onnx"
        admin.pull(ref, pulled)
        spec, weights = read_onnx(onnx.load(str(pulled)))
        return predict_proba(spec, weights, x)

    np.testing.assert_allclose(
        served.out.reshape(5, 10), predictions("digits@candidate"), atol=1e-5
    )  # type: ignore[attr-defined]

    # Personalization: every site that fine-tuned has its own variant; a per-site pin
    # deploys plant-b's to plant-b, where it serves that variant's predictions.
    variants = final["variants"]
    assert {"plant-a", "plant-b"} <= set(variants) <= {"plant-a", "plant-b", "plant-c"}
    assert sorted(variants.values()) == list(range(3, 3 + len(variants)))
    variant = f"digits:{variants['plant-b']}"
    assert admin.resolve(variant)["tags"]["fl.site"] == "plant-b"
    admin.pin("plant-b", variant, "personalized by digits-e2e")
    expected = predictions(variant)
    wait_for(
        lambda: served("plant-b") and np.allclose(served.out.reshape(5, 10), expected, atol=1e-5),  # type: ignore[attr-defined]
        30,
        "plant-b serving its personalized variant",
    )
    assert not np.allclose(expected, predictions("digits@candidate"), atol=1e-3)
