"""Selection against a real fleet: residency, model readiness, health, latency; directory."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest

import modelfleet
from modelfleet.errors import HubUnreachable, InvalidInput
from modelfleet.routing import NoSiteAvailable, ResidencyRules
from modelfleet.routing.selection import MAX_MISSING_MODELS, SiteStats
from tests.routing.conftest import PUMP_OFFSET, GeoFleet

X = np.zeros((1, 4), np.float32)


def served_by(outputs: dict[str, np.ndarray]) -> str:
    """Which site answered: each serves pump with its own offset."""
    offset = float(outputs["Y"][0, 0])
    return next(name for name, value in PUMP_OFFSET.items() if value == offset)


def test_directory_needs_a_token_and_lists_urls_labels_models(geo_fleet: GeoFleet) -> None:
    url = f"{geo_fleet.hub.url}/api/v1/directory"
    assert httpx.get(url).status_code == 401
    doc = httpx.get(url, headers={"Authorization": f"Bearer {geo_fleet.infer_token}"}).json()
    sites = {s["name"]: s for s in doc["sites"]}
    assert set(sites) == {"eu-a", "eu-b", "us"}
    assert sites["eu-a"]["url"] == geo_fleet.links["eu-a"].url
    assert sites["us"]["labels"]["jurisdiction"] == "US"
    assert sites["eu-a"]["online"] is True
    models = {m["name"]: m for m in sites["eu-a"]["models"]}
    assert models["pump"] == {"name": "pump", "version": 1, "state": "ready", "ready": True}
    assert "enrollment_token" not in json.dumps(doc)


def test_client_works_from_the_disk_cache_when_the_hub_is_unreachable(
    geo_fleet: GeoFleet, tmp_path: Path
) -> None:
    cache = tmp_path / "directory.json"
    with modelfleet.Client(
        geo_fleet.hub.url, geo_fleet.infer_token, data_region="EU", cache_path=cache
    ) as online:
        assert online.router.directory.source == "hub"
        online.infer("pump", {"X": X})
    assert cache.is_file()
    dead = "http://127.0.0.1:9"  # nothing listens on the discard port
    token = geo_fleet.infer_token  # the sites still want it while the hub is away
    with modelfleet.Client(dead, token, data_region="EU", cache_path=cache) as offline:
        assert offline.router.directory.source == "cache"
        assert served_by(offline.infer("pump", {"X": X})) in {"eu-a", "eu-b"}
    with pytest.raises(HubUnreachable, match="no cached directory"):
        modelfleet.Client(dead, "x", data_region="EU", cache_path=tmp_path / "none.json")


def test_eu_data_never_reaches_a_non_eu_site_even_when_every_eu_site_is_down(
    geo_fleet: GeoFleet, tmp_path: Path
) -> None:
    us_bytes = geo_fleet.links["us"].stats.bytes_up
    with modelfleet.Client(
        geo_fleet.hub.url, geo_fleet.infer_token, data_region="EU", cache_path=tmp_path / "c"
    ) as client:
        eu = Counter(served_by(client.infer("pump", {"X": X})) for _ in range(30))
        assert set(eu) <= {"eu-a", "eu-b"}
        assert geo_fleet.links["us"].stats.bytes_up == us_bytes  # not even a probe
        assert served_by(client.infer("pump", {"X": X}, data_region="US")) == "us"

        geo_fleet.links["eu-a"].cut("reset")
        geo_fleet.links["eu-b"].cut("reset")
        try:
            for _ in range(3):
                with pytest.raises(NoSiteAvailable) as caught:
                    client.infer("pump", {"X": X}, deadline_s=2)
                message = str(caught.value)
                assert "residency rule EU -> {EU} (default: same jurisdiction only)" in message
                assert "eu-a" in message
                assert "eu-b" in message
                assert "outside the permitted jurisdictions were not considered (us)" in message
            # Data of another region still flows to its own site meanwhile.
            assert served_by(client.infer("pump", {"X": X}, data_region="US")) == "us"
        finally:
            geo_fleet.reset_links()


def test_a_policy_widens_what_a_region_may_reach_and_a_local_rule_does_not(
    geo_fleet: GeoFleet,
) -> None:
    # A static fleet has no hub: its policies are given in the policy file's format.
    policies = [{"name": "uk-to-us", "regions": ["UK"], "allowed_jurisdictions": ["UK", "US"]}]
    with modelfleet.Client(
        sites=geo_fleet.static_sites(), token=geo_fleet.infer_token, policies=policies
    ) as client:
        assert served_by(client.infer("pump", {"X": X}, data_region="UK")) == "us"
        with pytest.raises(NoSiteAvailable, match=r"residency rule IN -> \{IN\}"):
            client.infer("pump", {"X": X}, data_region="IN")
        with pytest.raises(InvalidInput, match="no data region"):
            client.infer("pump", {"X": X})  # no data region at all: refused
    # A local rule alone only narrows: UK data still has nowhere to go, and the refusal says
    # why the jurisdiction it names was not taken.
    rules = ResidencyRules({"UK": ["UK", "US"]}, source="test")
    with modelfleet.Client(
        sites=geo_fleet.static_sites(), token=geo_fleet.infer_token, residency=rules
    ) as client:
        with pytest.raises(NoSiteAvailable) as caught:
            client.infer("pump", {"X": X}, data_region="UK")
        assert "US ignored: local rules can only narrow" in str(caught.value)


def test_lowest_latency_healthy_site_with_the_model_is_chosen(geo_fleet: GeoFleet) -> None:
    # 200 ms round trips: a 10x margin over eu-b's latency even on a busy machine, so the
    # choice of eu-b cannot hinge on how fast this machine answers.
    geo_fleet.links["eu-a"].set(delay_s=0.1)
    try:
        with modelfleet.Client(
            sites=geo_fleet.static_sites(), token=geo_fleet.infer_token, data_region="EU"
        ) as client:
            picks = [served_by(client.infer("pump", {"X": X})) for _ in range(20)]
            assert picks[-10:] == ["eu-b"] * 10, picks
            # eu-b has no "gear": the slower eu-a serves it, never the US site.
            gear = [client.infer_detailed("gear", {"X": X}).site for _ in range(5)]
            assert gear == ["eu-a"] * 5
            # eu-b goes down: eu-a takes over without a failed request.
            geo_fleet.links["eu-b"].cut("reset")
            after = [served_by(client.infer("pump", {"X": X})) for _ in range(10)]
            assert after == ["eu-a"] * 10
            print("\nsite measurements:", client.router.snapshot())
    finally:
        geo_fleet.reset_links()


def test_a_site_remembers_a_bounded_number_of_models_it_does_not_serve() -> None:
    """Model names come from callers: a flood of 404s keeps at most MAX_MISSING_MODELS,
    expired ones leave first, and a name still known is renewed in place."""
    stats = SiteStats()
    for i in range(MAX_MISSING_MODELS + 500):
        stats.model_missing(f"m{i}", until=1000.0 + i, now=0.0)
    assert len(stats.missing_models) == MAX_MISSING_MODELS
    assert "m0" not in stats.missing_models  # the soonest to expire made room
    assert f"m{MAX_MISSING_MODELS + 499}" in stats.missing_models
    stats.model_missing("late", until=5000.0, now=3000.0)  # every entry expired by then
    assert list(stats.missing_models) == ["late"]
