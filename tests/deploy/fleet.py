"""A real hub and three real site agents on loopback, for the rollout tests that need
real telemetry feeding the gates: the fleet itself (see ``conftest.py``) and the helpers
that drive it (deploy, wait for a state, send traffic)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from modelfleet.cli.main import app as cli
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess
from tests.conftest import write_tiny_onnx

SITES = {
    "site-a": {"region": "eu-west", "jurisdiction": "EU", "provider": "aws"},
    "site-b": {"region": "us-east", "jurisdiction": "US", "provider": "gcp"},
    "site-c": {"region": "ap-south", "jurisdiction": "IN", "provider": "azure"},
}
HUB_ENV = {"MODELFLEET_HUB_ROLLOUT_INTERVAL_S": "0.3"}
SITE_ENV = {
    "MODELFLEET_SITE_TELEMETRY_WINDOW_S": "1",
    "MODELFLEET_SITE_TELEMETRY_SHIP_INTERVAL_S": "0.5",
}
CANARY = {"kind": "canary", "canary": "site-a", "then": [50, 100]}


@contextmanager
def env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class Fleet:
    root: Path
    hub: HubProcess
    admin: HubClient
    token: str
    sites: dict[str, SiteProcess] = field(default_factory=dict)
    counter: int = 0
    #: An infer token for the traffic (sites' /v2 require one).
    infer: str = ""

    def model(self, writer: Callable[[Path], Path] | None = None, **kw: Any) -> Path:
        self.counter += 1
        path = self.root / f"m{self.counter}.onnx"
        return writer(path) if writer else write_tiny_onnx(path, **kw)

    def restart_hub(self) -> None:
        with env(HUB_ENV):
            self.hub.start()

    def cli(self, *args: str, exit_code: int = 0) -> str:
        result = CliRunner().invoke(
            cli, [*args, "--hub", self.hub.url, "--token", self.token], catch_exceptions=False
        )
        assert result.exit_code == exit_code, result.output
        return result.output


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "it") -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if predicate():
                return time.monotonic() - started
        except httpx.TransportError:
            pass  # the site is restarting: ask again
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def reported(fleet: Fleet, site: str, model: str) -> dict[str, Any]:
    view = fleet.admin.get_site(site)
    return next((m for m in view["models"] if m["name"] == model), {})


@contextmanager
def traffic(
    fleet: Fleet, model: str, sites: tuple[str, ...] | None = None
) -> Iterator[dict[str, int]]:
    """Real requests with non-zero inputs to every site (or to ``sites``), ~30/s each."""
    stop = threading.Event()
    sent = {"ok": 0, "failed": 0}
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}

    def run(url: str) -> None:
        auth = {"Authorization": f"Bearer {fleet.infer}"}
        with httpx.Client(timeout=10, headers=auth) as http:
            while not stop.is_set():
                try:
                    response = http.post(f"{url}/v2/models/{model}/infer", json=body)
                    sent["ok" if response.status_code == 200 else "failed"] += 1
                except httpx.TransportError:
                    sent["failed"] += 1
                stop.wait(0.03)

    chosen = [s for name, s in fleet.sites.items() if sites is None or name in sites]
    threads = [threading.Thread(target=run, args=(s.url,)) for s in chosen]
    for t in threads:
        t.start()
    try:
        yield sent
    finally:
        stop.set()
        for t in threads:
            t.join()


def deploy(fleet: Fleet, ref: str, **kw: Any) -> dict[str, Any]:
    return fleet.admin.deploy({"ref": ref, "selector": kw.pop("selector", ""), **kw})


def settle(fleet: Fleet, rollout_id: str, states: tuple[str, ...], timeout: float = 120) -> dict:
    wait_for(
        lambda: fleet.admin.get_rollout(rollout_id)["state"] in states, timeout, f"rollout {states}"
    )
    return fleet.admin.get_rollout(rollout_id)


def baseline(fleet: Fleet, name: str, selector: str = "") -> None:
    """Version 1 of ``name`` at every selected site, at once."""
    fleet.admin.push(fleet.model(offset=1.0), name, training_regions=["global"])
    result = deploy(fleet, f"{name}:1", selector=selector, strategy={"bake_s": 0})
    settle(fleet, result["rollout"]["id"], ("succeeded",))
    for site in result["plan"]["waves"][0]:
        wait_for(lambda s=site: reported(fleet, s, name).get("active_version") == 1, what=site)


def served(fleet: Fleet, site: str, name: str, version: int) -> int:
    """Requests of ``name:version`` at ``site`` that the hub's telemetry has counted."""
    for row in fleet.admin.get_telemetry_status()["sites"]:
        if row["site"] == site:
            for m in row.get("models", []):
                if (m["model"], m["version"]) == (name, version):
                    return int(m["requests_total"])
    return 0


def wait_served(fleet: Fleet, name: str, version: int, count: int, sites: tuple[str, ...]) -> None:
    """Until the hub has counted ``count`` requests of ``name:version`` at each of ``sites``:
    a relative gate needs the previous version's figures before the step starts."""
    wait_for(
        lambda: all(served(fleet, s, name, version) >= count for s in sites),
        timeout=120,
        what=f"{count} requests of {name}:{version} at {sites}",
    )
