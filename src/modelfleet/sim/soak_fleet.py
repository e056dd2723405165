"""The fleet a soak runs against (:mod:`modelfleet.sim.soak`): a real hub process and three
real site processes on loopback, each site behind two WAN links so either side of it can be
partitioned.

::

    clients --client_link--> site --hub_link--> hub

``client_link`` is the SDK<->site path (the soak's inference load goes through it) and
``hub_link`` the site<->hub path (enrollment, sync, telemetry). Both are
:class:`~modelfleet.sim.wan.WanLink` proxies relaying TLS untouched (the fleet's
certificates name ``127.0.0.1``, which is where the links listen).

Each site also carries the soak's view of it: ``state`` (``up``, ``down`` while killed,
``cut`` while its client link is partitioned) and ``epoch``, bumped at every change of
state, so a request can tell whether its site was disturbed while it was outstanding.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import onnx
from onnx import TensorProto, helper

from modelfleet.errors import ModelfleetError
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess, wait_http
from modelfleet.sim.wan import WanLink

__all__ = ["MODEL", "SITE_NAMES", "SoakFleet", "SoakSite", "read_rss_mb", "wait_until"]

MODEL = "sensor"
SITE_NAMES = ("site-a", "site-b", "site-c")
#: Short intervals, so a fault's effects (and their healing) show within seconds.
HUB_ENV = {"MODELFLEET_HUB_ROLLOUT_INTERVAL_S": "0.3"}
SITE_ENV = {
    "MODELFLEET_SITE_TELEMETRY_WINDOW_S": "0.5",
    "MODELFLEET_SITE_TELEMETRY_SHIP_INTERVAL_S": "0.5",
    "MODELFLEET_SITE_RETRY_MAX_S": "1",
    "MODELFLEET_SITE_REPORT_INTERVAL_S": "0.5",
}
BODY = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` (errors of a process that is restarting count as "not yet")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (httpx.HTTPError, ModelfleetError):
            pass
        time.sleep(0.1)
    raise ModelfleetError(f"timed out after {timeout:.0f}s waiting for {what}")


def read_rss_mb(pid: int) -> float | None:
    """The resident set of ``pid`` in MB (``VmRSS`` of /proc/PID/status), None if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return None


def write_model(path: Path, offset: float) -> Path:
    """Y = X + offset on a [batch, 4] FP32 input (``offset`` makes each version distinct)."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])
    const = helper.make_tensor("offset", TensorProto.FLOAT, [1], [offset])
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "offset"], ["Y"])], "soak", [x], [y], initializer=[const]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@dataclass(eq=False)
class SoakSite:
    """One site, its two links and the soak's view of its state (see the module docstring)."""

    name: str
    proc: SiteProcess
    hub_link: WanLink
    client_link: WanLink
    state: str = "up"
    epoch: int = 0
    #: Set by the injector to hold this site's load; ``idle`` is set once it holds.
    paused: threading.Event = field(default_factory=threading.Event)
    idle: threading.Event = field(default_factory=threading.Event)

    def change(self, state: str) -> None:
        self.state = state
        self.epoch += 1


@dataclass
class SoakFleet:
    """Start with :meth:`start` (a context manager); everything stops on exit."""

    root: Path
    hub: HubProcess
    admin: HubClient
    infer_token: str
    sites: list[SoakSite]
    verify: ssl.SSLContext
    versions: int = 1

    @classmethod
    @contextmanager
    def start(cls, root: Path) -> Iterator[SoakFleet]:
        """Hub, three sites enrolled through their hub links, version 1 of :data:`MODEL`
        active everywhere. Sets ``MODELFLEET_CA_FILE``/``SSL_CERT_FILE`` for the duration
        (the sites enroll against the hub's fleet CA); restored on exit."""
        init = init_hub(root / "hub")
        hub = HubProcess(root / "hub", extra_env=dict(HUB_ENV))
        saved = {k: os.environ.get(k) for k in ("MODELFLEET_CA_FILE", "SSL_CERT_FILE")}
        os.environ["MODELFLEET_CA_FILE"] = os.environ["SSL_CERT_FILE"] = str(hub.ca_file)
        sites: list[SoakSite] = []
        admin: HubClient | None = None
        try:
            hub.start()
            admin = HubClient(hub.url, init.admin_token, ca_file=hub.ca_file, timeout=10)
            infer = admin.create_token("soak", "infer").token
            verify = ssl.create_default_context(cafile=str(hub.ca_file))
            for name in SITE_NAMES:
                hub_link = WanLink(("127.0.0.1", hub.port), scheme="https").start()
                token = admin.add_site(name, {"region": name})["enrollment_token"]
                proc = SiteProcess(root / name, hub_link.url, token, extra_env=dict(SITE_ENV))
                client_link = WanLink(("127.0.0.1", proc.port), scheme="https").start()
                sites.append(SoakSite(name, proc, hub_link, client_link))
                proc.start(wait_ready=False)  # the three start in parallel
            for site in sites:
                wait_http(f"{site.proc.url}/v2/health/ready", 90, site.proc.proc)
            fleet = cls(root, hub, admin, infer, sites, verify)
            first = fleet.deploy_version(offset=1.0, strategy={"bake_s": 0})
            wait_until(lambda: fleet.admin.get_rollout(first).state == "succeeded", 90, "v1")
            for site in sites:
                fleet.wait_model_ready(site, 90)
            yield fleet
        finally:
            for site in sites:
                site.proc.stop()
                site.client_link.stop()
                site.hub_link.stop()
            if admin is not None:
                admin.close()
            hub.stop()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    # ------------------------------------------------------------------ helpers

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.infer_token}"}

    def deploy_version(
        self, offset: float, strategy: dict[str, Any], gates: dict[str, Any] | None = None
    ) -> str:
        """Push the next version of :data:`MODEL` and deploy it; returns the rollout id."""
        path = write_model(self.root / f"v{self.versions}.onnx", offset)
        version = self.admin.push(path, MODEL, training_regions=["global"]).version
        self.versions = version + 1
        request: dict[str, Any] = {
            "ref": f"{MODEL}:{version}",
            "selector": "",
            "strategy": strategy,
        }
        if gates:
            request["gates"] = gates
        rollout = self.admin.deploy(request).rollout
        if rollout is None:
            raise ModelfleetError(f"deploying {MODEL}:{version} started no rollout")
        return rollout.id

    def wait_model_ready(self, site: SoakSite, timeout: float) -> None:
        """Until :data:`MODEL` answers ready through the site's client link."""
        url = f"{site.client_link.url}/v2/models/{MODEL}/ready"

        def ready() -> bool:
            with httpx.Client(verify=self.verify, headers=self.headers, timeout=2) as http:
                return http.get(url).status_code == 200

        wait_until(ready, timeout, f"{MODEL} ready at {site.name}")

    def hub_counts(self) -> dict[tuple[str, str, int], int]:
        """The hub's telemetry totals per (site, model, version), as the exactly-once tests
        read them (``requests_total`` of ``GET /api/v1/telemetry/status``)."""
        counts: dict[tuple[str, str, int], int] = {}
        for row in self.admin.get_telemetry_status().sites:
            for m in (row.model_extra or {}).get("models", []):
                key = (row.site, str(m["model"]), int(m["version"]))
                counts[key] = int(m["requests_total"])
        return counts

    def pids(self) -> dict[str, int]:
        """The live processes, by name (for the memory watch)."""
        named = {"hub": self.hub.proc, **{s.name: s.proc.proc for s in self.sites}}
        return {n: p.pid for n, p in named.items() if p is not None and p.poll() is None}
