"""The signed desired state, against a hostile path between a real site and a real hub.

A man in the middle (here an HTTP proxy the site reaches the hub through, which TLS would
keep out; the signature must stop it on its own) replays an old signed answer, forges an
empty one, strips the signature, or alters the model list. The site refuses each, keeps
serving what it had, says why in its report and in ``status``, and a restart serves the same
models from its cache. A rollback the hub itself signs is taken.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess
from tests.site.test_data_plane import wait_for

pytestmark = pytest.mark.plain_http  # the proxy rewrites the hub's answers: it must read them

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class HostileHub:
    """A forwarding HTTP proxy in front of the hub that can answer the site's desired-state
    requests with a body of its choosing (:attr:`forged`), with a new ETag each time so
    the site takes it."""

    def __init__(self, hub_url: str) -> None:
        self.upstream = httpx.Client(base_url=hub_url, timeout=150)
        self.forged: bytes | None = None
        self.recorded: list[bytes] = []  # every genuine desired-state body seen
        self.blob_requests = 0
        self.served_forged = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass  # quiet: the site polls all the time, and pytest shows stderr

            def _relay(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                if "/desired-state" in self.path and proxy.forged is not None:
                    proxy.served_forged += 1
                    self._answer(200, proxy.forged, {"etag": f'"forged{proxy.served_forged}"'})
                    return
                if "/blobs/" in self.path:
                    proxy.blob_requests += 1
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                answer = proxy.upstream.request(
                    self.command, self.path, content=body, headers=headers
                )
                if "/desired-state" in self.path and answer.status_code == 200:
                    proxy.recorded.append(answer.content)
                kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
                self._answer(answer.status_code, answer.content, kept)

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._relay()

            def do_POST(self) -> None:
                self._relay()

            def do_PUT(self) -> None:
                self._relay()

            def do_DELETE(self) -> None:
                self._relay()

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a site that hangs up mid-poll (a restart) is no error here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.upstream.close()


@dataclass
class Setup:
    root: Path
    hub: HubProcess
    admin: HubClient
    path: HostileHub
    site: SiteProcess
    token: str
    admin_token: str

    def active(self, model: str = "pump") -> int | None:
        try:
            answer = httpx.get(
                f"{self.site.url}/v2/models/{model}/ready",
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=5,
            )
        except httpx.TransportError:
            return None
        return int(answer.json()["version"]) if answer.status_code == 200 else None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``modelfleet ARGS --hub HUB`` as the admin, in a child process."""
        return subprocess.run(
            [sys.executable, "-m", "modelfleet", *args, "--hub", self.hub.url],
            capture_output=True,
            text=True,
            env={**os.environ, "MODELFLEET_TOKEN": self.admin_token},
            timeout=60,
        )

    def refusal(self) -> str | None:
        value = self.admin.get_site("plant-a").desired_state_refused
        return str(value) if value else None


@pytest.fixture
def setup(tmp_path: Path, tiny_onnx: Callable[..., Path]) -> Iterator[Setup]:
    init = init_hub(tmp_path / "hub")
    hub = HubProcess(tmp_path / "hub", tls=False).start()
    admin = HubClient(hub.url, init.admin_token)
    path = HostileHub(hub.url)
    site: SiteProcess | None = None
    try:
        for offset in (1.0, 2.0):
            admin.push(tiny_onnx(offset=offset), "pump")
        token = admin.create_token("app", "infer").token
        created = admin.add_site("plant-a", {"region": "eu-west"})
        site = SiteProcess(tmp_path / "site", path.url, created["enrollment_token"]).start(60)
        yield Setup(tmp_path, hub, admin, path, site, token, init.admin_token)
    finally:
        if site is not None:
            site.stop()
        path.close()
        admin.close()
        hub.stop()


def test_a_hostile_path_cannot_downgrade_or_empty_a_site(setup: Setup) -> None:
    admin, path = setup.admin, setup.path
    admin.assign("plant-a", "pump:1")
    wait_for(lambda: setup.active() == 1, "pump:1 active")
    old_answer = path.recorded[-1]
    assert json.loads(json.loads(old_answer)["signed"]["text"])["models"][0]["version"] == 1
    admin.assign("plant-a", "pump:2")
    wait_for(lambda: setup.active() == 2, "pump:2 active")
    genuine = json.loads(path.recorded[-1])

    # 1. The old signed answer, replayed: a lower revision, refused as a whole.
    path.forged = old_answer
    wait_for(lambda: setup.refusal() is not None, "the site's report of the refusal")
    assert "older than the applied" in (setup.refusal() or "")
    assert setup.active() == 2

    # 2. An empty list, and the genuine answer with its signature stripped or its list
    #    rewritten to pump:1: none is a signed state of this site.
    forgeries = {
        "no signed document": {**genuine, "signed": None, "models": []},
        "signature": {
            **genuine,
            "signed": {
                "text": genuine["signed"]["text"].replace('"version":2', '"version":1'),
                "signature": genuine["signed"]["signature"],
            },
        },
    }
    for expected, forged in forgeries.items():
        path.forged = json.dumps(forged).encode()
        wait_for(lambda e=expected: e in (setup.refusal() or ""), f"refusal naming {expected}")
        assert setup.active() == 2

    # The operator is told, by `status`, on stderr.
    status = setup.cli("status")
    assert status.returncode == 0, status.stderr
    assert "site plant-a refused its desired state" in status.stderr

    # 3. A restart while the path still forges: the cache serves pump:2 again.
    setup.site.stop()
    setup.site.start(60)
    wait_for(lambda: setup.active() == 2, "pump:2 served from cache after the restart")

    # 4. The path goes honest; the hub itself rolls back: signed as a downgrade, taken.
    path.forged = None
    wait_for(lambda: setup.refusal() is None, "the refusal cleared")
    admin.assign("plant-a", "pump:1")
    wait_for(lambda: setup.active() == 1, "the hub's signed rollback to pump:1")
    latest = json.loads(json.loads(path.recorded[-1])["signed"]["text"])
    assert latest["models"][0]["downgrade"] is True
    log = (setup.root / "site.log").read_text(errors="replace")
    assert "Traceback" not in log


def test_an_empty_signed_state_unloads_but_keeps_the_cache(setup: Setup) -> None:
    admin = setup.admin
    admin.assign("plant-a", "pump:2")
    wait_for(lambda: setup.active() == 2, "pump:2 active")
    admin.unassign("plant-a", "pump")
    wait_for(lambda: setup.active() is None, "pump unloaded by the signed empty state")
    cached = list((setup.site.state_dir / "cache").rglob("*"))
    assert any(p.is_file() and p.stat().st_size > 0 for p in cached)
    # A restart serves nothing the signed state unassigned, though the cache keeps it.
    setup.site.stop()
    setup.site.start(60)
    wait_for(lambda: setup.admin.get_site("plant-a").online, "the restarted site reporting")
    assert setup.active() is None
    # Reassigned, even below the version it ran: the floor went with the assignment, and
    # the blob does not cross the network a second time.
    downloads = setup.path.blob_requests
    admin.assign("plant-a", "pump:2")
    wait_for(lambda: setup.active() == 2, "pump:2 active again")
    assert setup.path.blob_requests == downloads


def test_a_signed_decommission_wipes_the_cache_and_an_assignment_ends_it(setup: Setup) -> None:
    admin = setup.admin
    admin.assign("plant-a", "pump:2")
    wait_for(lambda: setup.active() == 2, "pump:2 active")
    decommissioned = setup.cli("site", "decommission", "plant-a")
    assert decommissioned.returncode == 0, decommissioned.stderr
    assert "decommissioned at revision" in decommissioned.stdout
    revision = admin.get_site("plant-a").revision

    def blobs() -> list[Path]:
        cache = setup.site.state_dir / "cache"
        return [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size > 0]

    wait_for(lambda: admin.get_site("plant-a").applied_revision == revision, "decommission taken")
    assert setup.active() is None
    assert blobs() == []  # no model left on the site's disk
    signed = json.loads(json.loads(setup.path.recorded[-1])["signed"]["text"])
    assert signed["decommission"] is True
    assert signed["models"] == []
    assert admin.get_site("plant-a").decommissioned_at is not None

    # A restart has nothing to restore from.
    setup.site.stop()
    setup.site.start(60)
    wait_for(lambda: admin.get_site("plant-a").online, "the restarted site reporting")
    assert setup.active() is None

    # Assigned again: back in service, the blob downloaded afresh.
    downloads = setup.path.blob_requests
    admin.assign("plant-a", "pump:2")
    wait_for(lambda: setup.active() == 2, "pump:2 active again")
    assert setup.path.blob_requests > downloads
    assert admin.get_site("plant-a").decommissioned_at is None
    log = (setup.root / "site.log").read_text(errors="replace")
    assert "Traceback" not in log
