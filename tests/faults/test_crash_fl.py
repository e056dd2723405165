"""The hub SIGKILLed inside a federated job, at each of the coordinator's crash points, and
restarted on the same data directory: the job finishes as if nothing had happened.

One hub and two real site processes serve the module (a tiny softmax model, 2 rounds, a
few dozen rows per site), so each test costs a job and two hub starts. Each test starts
the hub armed at one point (:mod:`modelfleet.crashpoints`), starts a job, waits for the
hub to die there, restarts it unarmed and checks the point's invariant:

- ``hub.fl.after_aggregate``: the round whose aggregate died in memory closes once, from
  the updates the sites had already sent (no site trains it again), and the job's history
  has each round once;
- ``hub.fl.after_register``: the job's result is registered exactly once;
- ``hub.fl.mid_variants``: every site's personalized variant is registered exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from modelfleet.federation.specs import ModelSpec, build_onnx, init_weights
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess, wait_http
from tests.conftest import trust_fleet_ca
from tests.faults.crash import armed, wait_killed
from tests.federation.conftest import write_site_config
from tests.waiting import wait_for

SITES = ("fl-a", "fl-b")
MODEL = "tiny-fl"
SITE_ENV = {"MODELFLEET_SITE_RETRY_MAX_S": "0.5", "MODELFLEET_SITE_FL_POLL_S": "5"}


@dataclass
class FLFleet:
    root: Path
    hub: HubProcess
    admin: HubClient
    sites: dict[str, SiteProcess]


def _blobs(seed: int, rows: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Three separable classes in four features: enough for a round to learn something."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, rows)
    centres = np.array([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]], np.float64)
    return centres[y] + rng.normal(0, 0.5, (rows, 4)), y


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FLFleet]:
    root = tmp_path_factory.mktemp("fl-crash")
    init = init_hub(root / "hub")
    hub = HubProcess(root / "hub").start(timeout=60)
    trusted = pytest.MonkeyPatch()  # module scope: undone in the finally below
    trust_fleet_ca(trusted, hub.ca_file)
    admin = HubClient(hub.url, init.admin_token)
    sites: dict[str, SiteProcess] = {}
    try:
        spec = ModelSpec(family="softmax", features=4, classes=3)
        onnx.save(build_onnx(spec, init_weights(spec)), str(root / "init.onnx"))
        admin.push(root / "init.onnx", MODEL)
        for seed, name in enumerate(SITES):
            x, y = _blobs(seed)
            config = write_site_config(root, name, x, y)
            token = admin.add_site(name, {"region": "eu-west"})["enrollment_token"]
            sites[name] = SiteProcess(
                root / f"site-{name}",
                hub.url,
                token,
                extra_env={**SITE_ENV, "MODELFLEET_SITE_CONFIG_FILE": str(config)},
                log_level="info",  # the test counts the updates each site sent
            ).start(wait_ready=False)
        for site in sites.values():
            wait_http(f"{site.url}/v2/health/ready", 60, site.proc)
        wait_for(lambda: len(admin.get_federation_consents()) == 2, "both sites' consent")
        wait_for(lambda: all(s["online"] for s in admin.list_sites()), "both sites online")
        yield FLFleet(root, hub, admin, sites)
    finally:
        for site in sites.values():
            site.stop()
        admin.close()
        hub.stop()
        trusted.undo()


def _crash_job(fleet: FLFleet, point: str, job_id: str, **config: Any) -> dict[str, Any]:
    """Start job ``job_id`` on a hub armed at ``point``, see the hub die there, restart it
    unarmed and return the job once it has finished."""
    marker = fleet.root / f"{job_id}.crashed"
    fleet.hub.stop()
    fleet.hub.extra_env = armed(point, marker)
    fleet.hub.start(timeout=60)
    wait_for(lambda: all(s["online"] for s in fleet.admin.list_sites()), "sites back online")
    fleet.admin.start_federated_job(
        {
            "id": job_id,
            "model": f"{MODEL}:1",
            "data": "digits",  # the data set name write_site_config gives the CSV
            "rounds": 2,
            "min_sites": 2,
            "lr": 0.5,
            # Only bounds a round a site never answers; both answer at once.
            "round_timeout_s": 60,
            **config,
        }
    )
    wait_killed(fleet.hub.proc, point, marker)
    fleet.hub.extra_env = {}
    fleet.hub.start(timeout=60)

    def finished() -> bool:
        return fleet.admin.get_federated_job(job_id)["state"] in ("completed", "failed", "aborted")

    wait_for(finished, f"job {job_id} finished after the hub restart")
    job = dict(fleet.admin.get_federated_job(job_id))
    assert job["state"] == "completed", job["message"]
    return job


def _registered(fleet: FLFleet, job_id: str) -> list[dict[str, Any]]:
    """Every version of the model a job registered (its result and its variants)."""
    versions = fleet.admin.get_model(MODEL)["versions"]
    return [dict(v) for v in versions if v["tags"].get("fl.job") == job_id]


def _site_log(fleet: FLFleet, site: str) -> str:
    return (fleet.root / f"site-{site}.log").read_text()


def _sent(fleet: FLFleet, site: str, job_id: str, number: int) -> int:
    """How many times ``site`` logged a delivered update for round ``number``."""
    return _site_log(fleet, site).count(f"federated job {job_id} round {number}: sent ")


def _when(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _check_history(job: dict[str, Any], rounds: int) -> None:
    """Each round once, closed at its first attempt, with one update from each site."""
    details = job["round_details"]
    assert [r["round"] for r in details] == list(range(1, rounds + 1))
    for r in details:
        assert (r["state"], r["attempt"]) == ("closed", 1), r
        assert sorted(u["site"] for u in r["updates"]) == sorted(SITES), r["updates"]
    assert job["round"] == rounds


def test_hub_killed_after_aggregate_closes_the_round_once(fleet: FLFleet) -> None:
    job = _crash_job(fleet, "hub.fl.after_aggregate", "crash-agg")
    _check_history(job, 2)
    # Round 1 was closed by the restarted hub from the updates stored before the crash
    # (one per site: a site's retried delivery is not a second update).
    died = datetime.fromtimestamp((fleet.root / "crash-agg.crashed").stat().st_mtime, UTC)
    first = job["round_details"][0]
    assert all(_when(u["received_at"]) <= died for u in first["updates"]), first["updates"]
    assert _when(first["closed_at"]) >= died
    assert first["metrics"]["num_sites"] == 2
    # Both sites were told their round-1 update counted (the lost reply's retry is
    # acknowledged), so neither logs it as undelivered.
    for site in SITES:
        wait_for(lambda s=site: _sent(fleet, s, "crash-agg", 1) == 1, f"{site}'s round 1 sent")
        assert "round 1: no answer delivered" not in _site_log(fleet, site)
    (result,) = _registered(fleet, "crash-agg")
    assert result["version"] == job["result_version"]
    assert result["tags"]["fl.rounds"] == "2"


def test_hub_killed_after_register_registers_the_result_once(fleet: FLFleet) -> None:
    job = _crash_job(fleet, "hub.fl.after_register", "crash-reg", alias="crash-reg")
    _check_history(job, 2)
    (result,) = _registered(fleet, "crash-reg")
    assert result["version"] == job["result_version"]
    assert fleet.admin.resolve(f"{MODEL}@crash-reg")["version"] == job["result_version"]
    assert job["message"] == f"registered {MODEL}:{job['result_version']}"


def test_hub_killed_mid_variants_registers_each_variant_once(fleet: FLFleet) -> None:
    job = _crash_job(fleet, "hub.fl.mid_variants", "crash-var", personalize_epochs=1)
    _check_history(job, 3)  # two rounds and the personalization round
    registered = _registered(fleet, "crash-var")
    results = [v for v in registered if "fl.site" not in v["tags"]]
    variants = [v for v in registered if "fl.site" in v["tags"]]
    assert [v["version"] for v in results] == [job["result_version"]]
    assert sorted(v["tags"]["fl.site"] for v in variants) == sorted(SITES)
    assert job["variants"] == {v["tags"]["fl.site"]: v["version"] for v in variants}
    assert all(v["parent_version"] == job["result_version"] for v in variants)
