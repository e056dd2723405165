"""Client-supplied data regions are hostile input (issue 16): one grammar, a bounded memory.

The region comes from anyone who can reach the gateway (``x-modelfleet-data-region``) or
call the SDK. Before this, every distinct value was remembered by the router forever and
walked by its probe loop every 2 s: a flood of random regions grew the gateway without
bound. Now a region outside the grammar is a 400 naming the header and the rule, a region
that permits no site gets the residency refusal without being remembered, and what is
remembered is capped.
"""

from __future__ import annotations

import asyncio
import random
import re
import string

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from modelfleet.errors import ERROR_CLASSES, InvalidDataRegion, NoSiteAvailable
from modelfleet.routing import Client, ResidencyRules
from modelfleet.routing.directory import SiteDirectory
from modelfleet.routing.probing import MAX_REMEMBERED_REGIONS
from modelfleet.routing.residency import MAX_DATA_REGION_LENGTH, check_data_region
from modelfleet.routing.router import Router
from modelfleet.site.cascade import Cascade
from tests.routing.conftest import GeoFleet

_BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}]}
_REGION = "x-modelfleet-data-region"

#: Outside the grammar, each for a different reason (bytes: sent as they are).
_HOSTILE: list[bytes] = [
    b"EU WEST",
    b"eu_west",
    b"EU.1",
    b"EU/US",
    b"EU;x",
    b"**",
    b"EU*",
    b"A" * (MAX_DATA_REGION_LENGTH + 1),
    b"%45%55",
    "\u00c9U".encode("latin-1"),
]


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    if found is None:
        raise AssertionError(f"{name} missing from /metrics:\n{text}")
    return float(found.group(1))


def _invalid_regions(n: int, rng: random.Random) -> list[bytes]:
    out = list(_HOSTILE)
    while len(out) < n:
        stem = "".join(rng.choices(string.ascii_uppercase, k=6)).encode()
        out.append(stem + rng.choice([b" ", b"_", b".", b"!", b"@", b":", b"+"]) + stem)
    return out


def test_a_flood_of_region_headers_leaves_the_gateway_bounded(
    geo_fleet: GeoFleet, gateway: str
) -> None:
    rng = random.Random(16)
    valid = sorted({"R-" + "".join(rng.choices("ABCDEF0123456789", k=12)) for _ in range(2000)})
    invalid = _invalid_regions(200, rng)
    with httpx.Client(base_url=gateway, timeout=10, headers=geo_fleet.auth) as http:
        # The regions the fleet serves are warmed first: the probe targets of a healthy gateway.
        assert http.post("/v2/models/pump/infer", json=_BODY).status_code == 200
        us = http.post("/v2/models/pump/infer", json=_BODY, headers={_REGION: "us"})
        assert us.status_code == 200, us.text
        assert us.headers["x-modelfleet-site"] == "us"
        before = http.get("/metrics").text

        refused: dict[bytes, httpx.Response] = {}
        for region in invalid:
            refused[region] = http.post(
                "/v2/models/pump/infer", json=_BODY, headers=[(_REGION.encode(), region)]
            )
        unserved: dict[str, httpx.Response] = {}
        for text in valid:
            unserved[text] = http.post("/v2/models/pump/infer", json=_BODY, headers={_REGION: text})
        after = http.get("/metrics").text

        for region, response in refused.items():
            assert response.status_code == 400, (region, response.text)
            message = response.json()["error"]
            assert _REGION in message, message
            assert "A-Z, 0-9 and '-'" in message, message
        for text, response in unserved.items():
            assert response.status_code == 503, (text, response.text)
            assert f"residency rule {text} -> {{{text}}}" in response.json()["error"]

        # Alive, still routing, and nothing of the flood kept.
        assert http.get("/v2/health/live").status_code == 200
        eu = http.post("/v2/models/pump/infer", json=_BODY)
        assert eu.status_code == 200, eu.text
        assert eu.headers["x-modelfleet-site"] in {"eu-a", "eu-b"}
        assert _metric(after, "modelfleet_gateway_remembered_regions") == 2  # EU and US
        assert _metric(after, "modelfleet_gateway_probe_targets") == len(geo_fleet.sites)
        # Probes follow the sites, not the requests: the flood's 2,200 requests add none of
        # their own (the periodic round, a few per 2 s, goes on; far below one per region).
        probes = _metric(after, "modelfleet_gateway_probes_total") - _metric(
            before, "modelfleet_gateway_probes_total"
        )
        assert probes < len(valid) / 10, probes


@pytest.mark.parametrize("text", ["EU", "eu", "us-east-1", "*", "0", "A" * MAX_DATA_REGION_LENGTH])
def test_the_grammar_accepts_and_upper_cases(text: str) -> None:
    assert check_data_region(text) == text.upper()


@pytest.mark.parametrize(
    "text",
    [
        "",
        " EU",
        "EU\n",
        "eu\u0131",  # dotless i: upper-cases to an ASCII I, still refused
        "\ufb00",  # the ligature ff: upper-cases to "FF", still refused
        "\uff25\uff35",  # full-width EU
        "EU\x7f",  # the HTTP server refuses it before the gateway; the SDK here
        *(b.decode("latin-1") for b in _HOSTILE),
    ],
)
def test_the_grammar_refuses_the_rest(text: str) -> None:
    with pytest.raises(InvalidDataRegion, match="data_region") as caught:
        check_data_region(text)
    assert caught.value.status == 400
    assert ERROR_CLASSES[caught.value.code] is InvalidDataRegion


def test_the_sdk_refuses_a_bad_region_before_sending() -> None:
    sites = [{"name": "s", "url": "http://127.0.0.1:9", "labels": {"jurisdiction": "EU"}}]
    with pytest.raises(InvalidDataRegion, match=r"data_region 'EU WEST'"):
        Client(sites=sites, data_region="EU WEST")
    with Client(sites=sites, data_region="EU") as client:
        with pytest.raises(InvalidDataRegion, match=r"data_region 'eu_west'.*A-Z, 0-9 and '-'"):
            client.infer("m", np.zeros((1, 4), np.float32), data_region="eu_west")
        assert client.router.prober.remembered == 0


def test_residency_rule_keys_follow_the_grammar() -> None:
    with pytest.raises(InvalidDataRegion, match="residency rule"):
        ResidencyRules({"EU WEST": ["EU"]})
    bad = {"name": "p", "regions": ["EU WEST"], "allowed_jurisdictions": ["EU"]}
    with pytest.raises(InvalidDataRegion, match="residency policy 'p'"):
        SiteDirectory(sites=[], policies=[bad])


def test_the_remembered_regions_are_capped() -> None:
    """Even regions that do permit a site (here a policy sending 300 regions to the EU
    site) are kept at most :data:`MAX_REMEMBERED_REGIONS`, the least recently used going
    first."""
    regions = [f"R{i}" for i in range(MAX_REMEMBERED_REGIONS + 44)]
    policy = {"name": "many", "regions": regions, "allowed_jurisdictions": ["EU"]}
    # Port 9 (discard) refuses: every attempt fails at once, which is all this needs.
    directory = SiteDirectory(
        sites=[{"name": "s", "url": "http://127.0.0.1:9", "labels": {"jurisdiction": "EU"}}],
        policies=[policy],
    )

    async def scenario() -> None:
        router = Router(directory)
        try:
            for region in regions:
                with pytest.raises(NoSiteAvailable):
                    await router.send("m", "/v2/models/m/infer", data_region=region)
                assert router.prober.remembered <= MAX_REMEMBERED_REGIONS
            assert router.prober.remembered == MAX_REMEMBERED_REGIONS
            assert regions[-1] in router.prober.regions
            assert regions[0] not in router.prober.regions
            assert [s.name for s in router.prober.targets()] == ["s"]
        finally:
            await router.aclose()

    asyncio.run(scenario())


def test_a_cascade_config_takes_only_a_valid_data_region() -> None:
    base = {"target": "https://cloud.example:8443", "target_gateway": "gw", "models": {}}
    with pytest.raises(InvalidDataRegion, match="cascade data_region 'EU WEST'"):
        Cascade.from_config({**base, "data_region": "EU WEST"}, registry=CollectorRegistry())
    taken = Cascade.from_config({**base, "data_region": "eu"}, registry=CollectorRegistry())
    assert taken.data_region == "EU"
