"""One residency for placements and requests: the hub's residency policies travel with its
directory, the SDK and the gateway route by them (from the disk copy too, with the hub
away), and local rules only narrow them. Against the shared routing fleet (eu-a, eu-b: EU;
us: US), with real hub, site and gateway processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

import modelfleet
from modelfleet.errors import NoSiteAvailable
from modelfleet.routing import ResidencyRules
from modelfleet.sim.launcher import GatewayProcess, issue_gateway_certificate
from tests.routing.conftest import PUMP_OFFSET, GeoFleet

X = np.zeros((1, 4), np.float32)
BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}]}
#: UK data may go to US sites; written with the older field name, which stays valid.
POLICY = {
    "name": "uk-data-to-us",
    "kind": "residency",
    "training_regions": ["UK"],
    "allowed_jurisdictions": ["UK", "US"],
}


def served_by(outputs: dict[str, np.ndarray]) -> str:
    offset = float(outputs["Y"][0, 0])
    return next(name for name, value in PUMP_OFFSET.items() if value == offset)


@pytest.fixture
def uk_policy(geo_fleet: GeoFleet) -> Iterator[None]:
    geo_fleet.admin.apply_policies([POLICY])
    try:
        yield
    finally:
        geo_fleet.admin.remove_policy(POLICY["name"])


def test_the_directory_carries_the_hubs_residency_policies(
    geo_fleet: GeoFleet, uk_policy: None
) -> None:
    doc = httpx.get(
        f"{geo_fleet.hub.url}/api/v1/directory", headers=geo_fleet.auth, timeout=10
    ).json()
    [rule] = doc["residency"]["policies"]
    assert rule["name"] == "uk-data-to-us"
    assert rule["regions"] == ["UK"]
    assert rule["allowed_jurisdictions"] == ["UK", "US"]
    assert rule["label"] == "jurisdiction"


def test_requests_follow_the_hubs_policy_online_and_from_the_cache(
    geo_fleet: GeoFleet, uk_policy: None, tmp_path: Path
) -> None:
    cache = tmp_path / "directory.json"
    token = geo_fleet.infer_token
    with modelfleet.Client(geo_fleet.hub.url, token, cache_path=cache) as client:
        assert served_by(client.infer("pump", {"X": X}, data_region="UK")) == "us"
        # Regions no policy names stay in their own jurisdiction.
        with pytest.raises(NoSiteAvailable, match=r"residency rule IN -> \{IN\}"):
            client.infer("pump", {"X": X}, data_region="IN")
    # The hub away: the policy comes from the disk copy, and holds as it did online.
    dead = "https://127.0.0.1:9"
    with modelfleet.Client(dead, token, cache_path=cache) as offline:
        assert offline.router.directory.source == "cache"
        assert served_by(offline.infer("pump", {"X": X}, data_region="UK")) == "us"
    # A local rule narrows the policy; one that would add a jurisdiction adds nothing.
    with modelfleet.Client(dead, token, cache_path=cache, residency={"UK": ["UK"]}) as narrow:
        with pytest.raises(NoSiteAvailable) as caught:
            narrow.infer("pump", {"X": X}, data_region="UK")
        message = str(caught.value)
        assert "residency rule UK -> {UK} (fleet policy 'uk-data-to-us')" in message
        assert "narrowed by the local rule UK -> {UK}" in message
    rules = ResidencyRules({"UK": ["EU", "US"]}, source="mine.yaml")
    with modelfleet.Client(dead, token, cache_path=cache, residency=rules) as wider:
        picks = {served_by(wider.infer("pump", {"X": X}, data_region="UK")) for _ in range(10)}
        assert picks == {"us"}  # never eu-a or eu-b
        with pytest.raises(NoSiteAvailable) as caught:
            wider.infer("gear", {"X": X}, data_region="UK", version=7)
        assert "EU ignored: local rules can only narrow the fleet's policies" in str(caught.value)


def test_the_gateway_routes_by_the_hubs_policy_and_its_local_file_only_narrows(
    geo_fleet: GeoFleet, uk_policy: None, tmp_path: Path
) -> None:
    tls_dir = issue_gateway_certificate(geo_fleet.hub.data_dir, tmp_path / "gw-tls")
    local = tmp_path / "residency.yaml"
    local.write_text("rules:\n  UK: [UK, EU]\n")
    env = {"MODELFLEET_TOKEN": geo_fleet.infer_token}
    plain = GatewayProcess(
        ["--hub", geo_fleet.hub.url, "--cache", str(tmp_path / "a.json")],
        extra_env=env,
        tls_dir=tls_dir,
    )
    narrowed = GatewayProcess(
        ["--hub", geo_fleet.hub.url, "--cache", str(tmp_path / "b.json"),
         "--residency", str(local)],
        extra_env=env, tls_dir=tls_dir, log_path=tmp_path / "narrowed.log",
    )  # fmt: skip
    headers = {**geo_fleet.auth, "x-modelfleet-data-region": "UK"}
    try:
        plain.start(60)
        narrowed.start(60)
        with httpx.Client(base_url=plain.url, headers=headers, timeout=30) as http:
            answer = http.post("/v2/models/pump/infer", json=BODY)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-modelfleet-site"] == "us"
        with httpx.Client(base_url=narrowed.url, headers=headers, timeout=30) as http:
            refused = http.post("/v2/models/pump/infer", json=BODY)
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert "narrowed by the local rule UK -> {EU, UK}" in error
            assert "EU ignored: local rules can only narrow" in error
            assert "eu-a" in error  # left out: the policy does not permit EU for UK data
        # The operator hears of the ignored jurisdiction in the gateway's log, not only callers.
        log = (tmp_path / "narrowed.log").read_text()
        assert "local residency rule for UK" in log
        assert "lists EU, which the fleet's policies do not permit: ignored" in log
    finally:
        plain.stop()
        narrowed.stop()


def test_an_offline_site_is_tried_only_after_every_online_one(geo_fleet: GeoFleet) -> None:
    sites = geo_fleet.static_sites()
    for site in sites:
        site["online"] = site["name"] != "eu-a"  # what the hub says when eu-a stops reporting
    with modelfleet.Client(
        sites=sites, token=geo_fleet.infer_token, data_region="EU", hedge=False
    ) as client:
        picks = {served_by(client.infer("pump", {"X": X})) for _ in range(10)}
        assert picks == {"eu-b"}
        # With every online EU site down, the offline one is the last resort (still EU).
        geo_fleet.links["eu-b"].cut("reset")
        try:
            assert served_by(client.infer("pump", {"X": X})) == "eu-a"
        finally:
            geo_fleet.reset_links()


def test_the_directory_cache_goes_where_modelfleet_cache_dir_says(
    geo_fleet: GeoFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELFLEET_CACHE_DIR", str(tmp_path / "caches"))
    with modelfleet.Client(geo_fleet.hub.url, geo_fleet.infer_token, data_region="EU") as client:
        client.infer("pump", {"X": X})
        written = client.router.directory.cache_path
    assert written is not None
    assert written.parent == tmp_path / "caches"
    assert written.name.startswith("directory-")
    assert written.is_file()


def test_a_sites_region_label_gives_a_finer_data_region_its_jurisdiction(
    geo_fleet: GeoFleet, tmp_path: Path
) -> None:
    # eu-a is region=eu-west, eu-b region=eu-central (both EU), us region=us-east.
    doc = httpx.get(
        f"{geo_fleet.hub.url}/api/v1/directory", headers=geo_fleet.auth, timeout=10
    ).json()
    assert doc["residency"]["regions"]["EU-WEST"] == ["EU"]
    with modelfleet.Client(
        geo_fleet.hub.url, geo_fleet.infer_token, cache_path=tmp_path / "c.json"
    ) as client:
        picks = {
            served_by(client.infer("pump", {"X": X}, data_region="eu-west")) for _ in range(10)
        }
        assert picks <= {"eu-a", "eu-b"}
        assert served_by(client.infer("pump", {"X": X}, data_region="us-east")) == "us"
        with pytest.raises(NoSiteAvailable, match=r"residency rule AP-SOUTH -> \{AP-SOUTH\}"):
            client.infer("pump", {"X": X}, data_region="ap-south")  # no site is there
