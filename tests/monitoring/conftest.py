"""Fixtures of the monitoring tests: a real hub, sites on loopback, a recording proxy."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess, free_port

# The store contract fixtures (SQLite always, PostgreSQL when the env var is set).
# (postgres_url lives in tests/conftest.py and is visible everywhere.)
from tests.hub.store.conftest import (  # noqa: F401
    backend_url,
    open_backend,
    sqlite_url,
    store,
)

FAST_TELEMETRY = {
    "MODELFLEET_SITE_TELEMETRY_WINDOW_S": "0.2",
    "MODELFLEET_SITE_TELEMETRY_SHIP_INTERVAL_S": "0.2",
    "MODELFLEET_SITE_RETRY_MAX_S": "1",
}


class RecordingProxy:
    """A TCP proxy on loopback that records every byte the client sends and can cut the
    link (refusing and resetting connections) to simulate an outage."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.sent = bytearray()
        self._lock = threading.Lock()
        self._down = threading.Event()
        self._closed = threading.Event()
        self._conns: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._down.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    with self._lock:
                        self.sent += data
                dst.sendall(data)
        except OSError:
            pass  # either side closed: the relay ends
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._down.set()
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self._down.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._server.close()


@dataclass
class Fleet:
    root: Path
    hub: HubProcess
    admin: HubClient
    sites: list[SiteProcess] = field(default_factory=list)
    proxies: list[RecordingProxy] = field(default_factory=list)

    def add_site(self, name: str, *, via: RecordingProxy | None = None, **env: str) -> SiteProcess:
        created = self.admin.add_site(name, {"region": "eu-west"})
        site = SiteProcess(
            self.root / f"site-{name}",
            via.url if via else self.hub.url,
            created["enrollment_token"],
            extra_env={**FAST_TELEMETRY, **env},
        ).start()
        self.sites.append(site)
        return site

    def proxy(self) -> RecordingProxy:
        made = RecordingProxy(self.hub.port)
        self.proxies.append(made)
        return made

    def site_total(self, site: str) -> int:
        for row in self.admin.telemetry_status()["sites"]:
            if row["site"] == site:
                return int(row["requests_total"])
        return 0


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    init = init_hub(tmp_path / "hub")
    hub = HubProcess(tmp_path / "hub").start()
    admin = HubClient(hub.url, init.admin_token)
    made = Fleet(tmp_path, hub, admin)
    try:
        yield made
    finally:
        for site in made.sites:
            site.stop()
        for proxy in made.proxies:
            proxy.close()
        admin.close()
        hub.stop()


def infer_body(x: np.ndarray) -> dict:
    return {
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }


def send_requests(url: str, model: str, batches: list[np.ndarray]) -> int:
    """Send each batch as one request; returns how many were answered 200."""
    ok = 0
    with httpx.Client(timeout=10) as http:
        for x in batches:
            response = http.post(f"{url}/v2/models/{model}/infer", json=infer_body(x))
            assert response.status_code == 200, response.text
            ok += 1
    return ok


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def serving(site: SiteProcess, model: str, version: int = 1) -> bool:
    try:
        response = httpx.get(f"{site.url}/v2/models/{model}/ready", timeout=2)
    except httpx.TransportError:
        return False
    return response.status_code == 200 and response.json().get("version") == str(version)
