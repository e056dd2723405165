"""The authenticated data plane with real processes: infer tokens checked at the sites and the
gateway from the signed grant lists, offline, and their scopes (models, site selector)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import (
    GatewayProcess,
    HubProcess,
    SiteProcess,
    issue_gateway_certificate,
    wait_http,
)
from tests.conftest import trust_fleet_ca
from tests.recording_proxy import RecordingProxy
from tests.site.test_key_rollover import wait_for

BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
LABELS = {"eu": {"jurisdiction": "EU", "region": "eu-west"}, "us": {"jurisdiction": "US"}}


@dataclass
class Plane:
    root: Path
    hub: HubProcess
    admin: HubClient
    tokens: dict[str, str] = field(default_factory=dict)
    sites: dict[str, SiteProcess] = field(default_factory=dict)
    proxies: dict[str, RecordingProxy] = field(default_factory=dict)

    def mint(self, name: str, role: str = "infer", **scope: object) -> str:
        body = {"name": name, "role": role, **scope}
        secret = str(self.admin.request("POST", "/api/v1/tokens", json=body).json()["token"])
        self.tokens[name] = secret
        return secret

    def call(self, site: str, path: str, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = self.sites[site].url + path
        if path.endswith("/infer"):
            return httpx.post(url, json=BODY, headers=headers, timeout=10)
        return httpx.get(url, headers=headers, timeout=10)


@pytest.fixture
def plane(
    tmp_path: Path,
    tiny_onnx: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[Plane]:
    init = init_hub(tmp_path / "hub")
    plain = request.node.get_closest_marker("plain_http") is not None
    hub = HubProcess(tmp_path / "hub", tls=not plain).start()
    if not plain:
        trust_fleet_ca(monkeypatch, hub.ca_file)  # every client here verifies the fleet CA
    admin = HubClient(hub.url, init.admin_token)
    made = Plane(tmp_path, hub, admin)
    try:
        admin.push(tiny_onnx(offset=2.0), "pump")
        admin.push(tiny_onnx(offset=5.0), "gear")
        made.mint("all")
        made.mint("pump-only", models=["pump"])
        made.mint("eu-only", site_selector="jurisdiction=EU")
        made.mint("viewer", role="viewer")
        for name, labels in LABELS.items():
            created = admin.add_site(name, labels)
            site = SiteProcess(tmp_path / f"site-{name}", hub.url, created["enrollment_token"])
            # The site's public URL is a recording proxy: what callers send it is visible.
            proxy = RecordingProxy(site.port)
            site.extra_env["MODELFLEET_SITE_PUBLIC_URL"] = proxy.url
            made.sites[name], made.proxies[name] = site.start(60), proxy
            admin.set_assignments(name, ["pump:1", "gear:1"])
        for name in LABELS:
            for model in ("pump", "gear"):
                wait_http(
                    f"{made.sites[name].url}/v2/models/{model}/ready",
                    60,
                    made.sites[name].proc,
                    token=made.tokens["all"],
                )
        yield made
    finally:
        for site in made.sites.values():
            site.stop()
        for proxy in made.proxies.values():
            proxy.close()
        admin.close()
        hub.stop()


def test_sites_check_credentials_and_scopes_offline_and_after_a_restart(plane: Plane) -> None:
    tokens = plane.tokens
    # Nothing that names a model, and no figures, without a credential; probes stay open.
    for path in (
        "/v2/models/pump/infer",
        "/v2/models/pump",
        "/v2/models/pump/ready",
        "/v2",
        "/metrics",
        "/healthz",
    ):
        refused = plane.call("eu", path)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in refused.json()["error"]
    assert plane.call("eu", "/v2/health/live").status_code == 200
    assert plane.call("eu", "/v2/health/ready").status_code == 200
    assert plane.call("eu", "/v2/models/pump/infer", "mf_not-a-token").status_code == 401

    ok = plane.call("eu", "/v2/models/pump/infer", tokens["all"])
    assert ok.status_code == 200, ok.text
    assert ok.json()["outputs"][0]["data"] == [3.0, 4.0, 5.0, 6.0]
    assert plane.call("eu", "/metrics", tokens["all"]).status_code == 200
    # A token limited to pump: pump yes, gear 403 (the OIP error body).
    assert plane.call("us", "/v2/models/pump/infer", tokens["pump-only"]).status_code == 200
    gear = plane.call("us", "/v2/models/gear/infer", tokens["pump-only"])
    assert gear.status_code == 403
    assert gear.json() == {"error": "token 'pump-only' may not call model 'gear'"}
    assert plane.call("us", "/v2/models/gear", tokens["pump-only"]).status_code == 403
    # A token limited to EU sites is known at the US site, with no rights there: 403.
    assert plane.call("eu", "/v2/models/gear/infer", tokens["eu-only"]).status_code == 200
    out_of_scope = plane.call("us", "/v2/models/gear/infer", tokens["eu-only"])
    assert out_of_scope.status_code == 403
    assert "site selector" in out_of_scope.json()["error"]
    assert plane.call("us", "/metrics", tokens["eu-only"]).status_code == 403
    # A hub token of another role is no inference credential: 403 naming the role needed.
    for path in ("/v2/models/pump/infer", "/v2/models/pump", "/metrics"):
        other_role = plane.call("eu", path, tokens["viewer"])
        assert other_role.status_code == 403, path
        assert "role viewer" in other_role.json()["error"]
        assert "--role infer" in other_role.json()["error"]

    # Revoked on the hub: refused at the site as soon as the site hears from the hub.
    listed = {t.name: t.id for t in plane.admin.list_tokens()}
    plane.admin.revoke_token(listed["pump-only"])
    wait_for(
        lambda: plane.call("us", "/v2/models/pump/infer", tokens["pump-only"]).status_code == 401,
        "the revocation at the site",
    )

    # The hub goes away and the site restarts: it authorises from the list it saved.
    plane.hub.kill()
    site = plane.sites["us"]
    site.stop()
    site.start(60)
    wait_for(
        lambda: plane.call("us", "/v2/models/pump/infer", tokens["all"]).status_code == 200,
        "the restarted site serving from its saved grant list",
    )
    assert plane.call("us", "/v2/models/pump/infer", tokens["pump-only"]).status_code == 401
    assert plane.call("us", "/v2/models/pump/infer").status_code == 401
    log = (site.state_dir.parent / "site-us.log").read_text(errors="replace")
    assert "Traceback" not in log


# Plain HTTP: the recording proxies in front of the sites read which token the gateway sends.
@pytest.mark.plain_http
def test_the_gateway_authenticates_callers_and_calls_sites_with_its_own_token(
    plane: Plane,
) -> None:
    own = plane.mint("gateway")
    # A scoped token cannot serve as a gateway's: it would fetch every token's hash.
    scoped = httpx.get(
        f"{plane.hub.url}/api/v1/grants/gateway",
        headers={"Authorization": f"Bearer {plane.tokens['eu-only']}"},
    )
    assert scoped.status_code == 403
    args = [
        "--hub", plane.hub.url, "--data-region", "EU",
        "--cache", str(plane.root / "gateway-directory.json"),
    ]  # fmt: skip
    env = {"MODELFLEET_TOKEN": own}
    if plane.hub.tls:
        tls_dir = issue_gateway_certificate(plane.hub.data_dir, plane.root / "gateway-tls")
        gateway = GatewayProcess(args, extra_env=env, tls_dir=tls_dir)
    else:
        gateway = GatewayProcess(args, extra_env=env, insecure_http=True)
    try:
        gateway.start(60)
        wait_http(f"{gateway.url}/v2/health/ready", 60, gateway.proc)

        def call(path: str, token: str | None, region: str = "EU") -> httpx.Response:
            headers = {"x-modelfleet-data-region": region}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            url = gateway.url + path
            if path.endswith("/infer"):
                return httpx.post(url, json=BODY, headers=headers, timeout=10)
            return httpx.get(url, headers=headers, timeout=10)

        assert call("/v2/health/live", None).status_code == 200
        for path in ("/v2/models/pump/infer", "/v2/models/pump", "/metrics", "/healthz"):
            refused = call(path, None)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"] == "Bearer"
        viewer = call("/v2/models/pump/infer", plane.tokens["viewer"])
        assert viewer.status_code == 403
        assert "role viewer" in viewer.json()["error"]

        plane.proxies["eu"].sent.clear()
        served = call("/v2/models/pump/infer", plane.tokens["all"])
        assert served.status_code == 200, served.text
        assert served.headers["x-modelfleet-site"] == "eu"
        # The site saw the gateway's credential, never the caller's.
        seen = plane.proxies["eu"].requests_with(b"/v2/models/pump/infer")
        assert seen
        assert all(f"Bearer {own}".encode() in head for head in seen)
        assert not any(plane.tokens["all"].encode() in head for head in seen)

        assert call("/v2/models/pump/infer", plane.tokens["pump-only"]).status_code == 200
        gear = call("/v2/models/gear/infer", plane.tokens["pump-only"])
        assert gear.status_code == 403
        assert "may not call model 'gear'" in gear.json()["error"]
        # EU-only: EU data goes to the EU site; US data has no site this token may reach.
        assert call("/v2/models/gear/infer", plane.tokens["eu-only"]).status_code == 200
        us = call("/v2/models/gear/infer", plane.tokens["eu-only"], region="US")
        assert us.status_code == 403
        assert "at any site" in us.json()["error"]

        # Revoked on the hub: the gateway refuses it once its list is refreshed.
        listed = {t.name: t.id for t in plane.admin.list_tokens()}
        plane.admin.revoke_token(listed["all"])
        wait_for(
            lambda: call("/v2/models/pump/infer", plane.tokens["all"]).status_code == 401,
            "the revocation at the gateway",
        )
    finally:
        gateway.stop()


def test_infer_tokens_on_the_hub_directory_only_and_validated(plane: Plane) -> None:
    def get(path: str, token: str) -> httpx.Response:
        return httpx.get(
            plane.hub.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    directory = get("/api/v1/directory", plane.tokens["all"])
    assert directory.status_code == 200
    assert {s["name"] for s in directory.json()["sites"]} == {"eu", "us"}
    eu_only = get("/api/v1/directory", plane.tokens["eu-only"]).json()
    assert [s["name"] for s in eu_only["sites"]] == ["eu"]
    for path in ("/api/v1/models", "/api/v1/sites", "/metrics", "/api/v1/grants/gateway"):
        assert get(path, plane.tokens["pump-only"]).status_code == 403, path
    assert httpx.get(f"{plane.hub.url}/metrics").status_code == 401
    assert get("/metrics", plane.tokens["viewer"]).status_code == 200

    admin = {"Authorization": f"Bearer {plane.admin.token}"}
    for body, message in (
        ({"role": "viewer", "models": ["pump"]}, "scope infer tokens only"),
        ({"models": []}, "at least one model"),
        ({"models": ["no spaces"]}, "invalid model name"),
        ({"site_selector": "jurisdiction in ("}, "invalid selector"),
        ({"site_selector": "  "}, "selector is empty"),
        ({"models": [f"m{i}" for i in range(101)]}, "at most 100"),
    ):
        answer = httpx.post(
            f"{plane.hub.url}/api/v1/tokens",
            json={"name": "t", "role": "infer", **body},
            headers=admin,
            timeout=10,
        )
        assert answer.status_code in (400, 422), (body, answer.text)
        assert message in answer.json()["error"]["message"], answer.text
