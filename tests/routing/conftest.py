"""One real fleet for the routing tests: a hub and three sites, each behind a WAN link.

Sites (every one reachable only through its own :class:`WanLink`, delay 0 until a test
changes it; the link's URL is the site's public URL, so the hub's directory points at it):

- ``eu-a`` (EU): pump:1 (Y = X + 1), gear:1, clf:1 (softmax)
- ``eu-b`` (EU): pump:2 (Y = X + 2), clf:2 (softmax of 10 X: confident, "the cloud")
- ``us``   (US): pump:3 (Y = X + 3), gear:1

so the answer itself tells which site served it. Tests that kill or slow a site put things
back before they return.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import onnx
import pytest
from onnx import TensorProto, helper

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import (
    GatewayProcess,
    HubProcess,
    SiteProcess,
    issue_gateway_certificate,
    wait_http,
)
from modelfleet.sim.wan import WanLink
from tests.conftest import trust_fleet_ca, write_tiny_onnx

PUMP_OFFSET = {"eu-a": 1.0, "eu-b": 2.0, "us": 3.0}


def write_softmax_onnx(path: Path, scale: float) -> Path:
    """probabilities = softmax(scale * X) over a [batch, 2] FP32 input."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 2])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])
    const = helper.make_tensor("scale", TensorProto.FLOAT, [1], [scale])
    nodes = [
        helper.make_node("Mul", ["X", "scale"], ["Z"]),
        helper.make_node("Softmax", ["Z"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "clf", [x], [y], initializer=[const])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@dataclass
class GeoFleet:
    root: Path
    hub: HubProcess
    admin: HubClient
    infer_token: str
    sites: dict[str, SiteProcess] = field(default_factory=dict)
    links: dict[str, WanLink] = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        """The infer token as a header, for calls straight to a site or the gateway."""
        return {"Authorization": f"Bearer {self.infer_token}"}

    def static_sites(self) -> list[dict[str, object]]:
        """The fleet as a static site list (no hub), through the WAN links."""
        return [
            {"name": name, "url": self.links[name].url, "labels": self.labels[name]}
            for name in self.sites
        ]

    def restart(self, name: str) -> None:
        site = self.sites[name]
        site.stop()
        site.start()

    def reset_links(self) -> None:
        for link in self.links.values():
            link.restore()
            link.set(delay_s=0.0, jitter_s=0.0, loss=0.0)


@pytest.fixture(scope="package")
def geo_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoFleet]:
    root = tmp_path_factory.mktemp("geo")
    init = init_hub(root / "hub")
    hub = HubProcess(root / "hub").start()
    # Package scope, undone in the finally below: the fleet CA must not stay trusted for
    # the rest of the session (a later package's processes inherit the environment).
    trusted = pytest.MonkeyPatch()
    trust_fleet_ca(trusted, hub.ca_file)
    admin = HubClient(hub.url, init.admin_token)
    # One infer token: the directory from the hub and inference at the sites.
    infer = admin.create_token("routing-tests", "infer")["token"]
    fleet = GeoFleet(root, hub, admin, infer)
    try:
        for offset in (1.0, 2.0, 3.0):
            admin.push(write_tiny_onnx(root / f"pump-{offset}.onnx", offset), "pump")
        admin.push(write_tiny_onnx(root / "gear.onnx", 50.0), "gear")
        admin.push(write_softmax_onnx(root / "clf-edge.onnx", 1.0), "clf")
        admin.push(write_softmax_onnx(root / "clf-cloud.onnx", 10.0), "clf")
        plan = {
            "eu-a": ({"jurisdiction": "EU", "region": "eu-west"}, ["pump:1", "gear:1", "clf:1"]),
            "eu-b": ({"jurisdiction": "EU", "region": "eu-central"}, ["pump:2", "clf:2"]),
            "us": ({"jurisdiction": "US", "region": "us-east"}, ["pump:3", "gear:1"]),
        }
        for name, (labels, refs) in plan.items():
            created = admin.add_site(name, labels)
            admin.set_assignments(name, refs)
            site = SiteProcess(root / f"site-{name}", hub.url, created["enrollment_token"])
            link = WanLink(("127.0.0.1", site.port), scheme="https").start()
            site.extra_env["MODELFLEET_SITE_PUBLIC_URL"] = link.url  # what the hub lists
            site.start(wait_ready=False)
            fleet.sites[name], fleet.links[name], fleet.labels[name] = site, link, labels
        for name, site in fleet.sites.items():
            wait_http(f"{site.url}/v2/health/ready", 60, site.proc)
            for ref in plan[name][1]:
                model = ref.split(":")[0]
                wait_http(f"{site.url}/v2/models/{model}/ready", 60, site.proc, token=infer)
        _wait_directory(hub.url, infer, plan)
        yield fleet
    finally:
        for site in fleet.sites.values():
            site.stop()
        for link in fleet.links.values():
            link.stop()
        admin.close()
        hub.stop()
        trusted.undo()


@pytest.fixture
def gateway(geo_fleet: GeoFleet) -> Iterator[str]:
    """A real `gateway serve` process on the hub's directory (default region EU), over TLS;
    its URL. One per test: what one test sends never shows in another's figures."""
    args = [
        "--hub", geo_fleet.hub.url, "--data-region", "EU",
        "--cache", str(geo_fleet.root / "gateway-cache.json"),
    ]  # fmt: skip
    tls_dir = issue_gateway_certificate(geo_fleet.hub.data_dir, geo_fleet.root / "gateway-tls")
    process = GatewayProcess(
        args, extra_env={"MODELFLEET_TOKEN": geo_fleet.infer_token}, tls_dir=tls_dir
    )
    try:
        process.start(timeout=60)
        wait_http(f"{process.url}/v2/health/ready", 60, process.proc)
        yield process.url
    finally:
        process.stop()


def _wait_directory(hub_url: str, token: str, plan: dict[str, object]) -> None:
    """Until every site has reported its URL and ready models to the hub."""
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        doc = httpx.get(
            f"{hub_url}/api/v1/directory", headers={"Authorization": f"Bearer {token}"}
        ).json()
        ready = {
            s["name"]
            for s in doc["sites"]
            if s["url"] and s["models"] and all(m["ready"] for m in s["models"])
        }
        if ready >= set(plan):
            return
        time.sleep(0.1)
    raise AssertionError(f"sites never all reported ready: {doc}")
