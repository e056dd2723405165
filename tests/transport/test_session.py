"""The hub session: error mapping, per-request timeouts, resumable downloads, one pool per
site agent."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modelfleet.errors import (
    Conflict,
    DigestMismatch,
    HubResponseError,
    HubUnreachable,
    NotFound,
)
from modelfleet.registry.signing import public_key_text
from modelfleet.settings import SiteSettings
from modelfleet.site.agent import SiteAgent
from modelfleet.site.state import Credentials, SiteState
from modelfleet.transport.session import HubSession, poll_timeout

BLOB = bytes(range(256)) * 64


class Handler(BaseHTTPRequestHandler):
    """A stand-in hub: each path answers one way."""

    seen: list[tuple[str, str | None, str | None]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization"), self.headers.get("Range")))
        if self.path == "/missing":
            error = {"error": {"code": "not_found", "message": "no model 'x'"}}
            self._answer(404, json.dumps(error).encode())
        elif self.path == "/conflict-with-wrong-status":
            error = {"error": {"code": "conflict", "message": "odd"}}
            self._answer(400, json.dumps(error).encode())
        elif self.path == "/proxy":
            self._answer(502, b"<html>bad gateway</html>", "text/html")
        elif self.path == "/unchanged":
            self.send_response(304)
            self.end_headers()
        elif self.path == "/blob":
            start = int((self.headers.get("Range") or "bytes=0-")[6:-1])
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(BLOB) - start))
            self.end_headers()
            self.wfile.write(BLOB[start:])
        else:
            self._answer(200, b'{"ok": true}')


@pytest.fixture
def hub() -> Iterator[str]:
    Handler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_credential_and_hub_error_bodies(hub: str) -> None:
    with HubSession(hub + "/", "secret") as session:
        assert session.request("GET", "/ok").json() == {"ok": True}
        with pytest.raises(NotFound, match="no model 'x'"):
            session.request("GET", "/missing")
        # A known code with another status is not trusted to be that error.
        with pytest.raises(HubResponseError) as odd:
            session.request("GET", "/conflict-with-wrong-status")
        assert not isinstance(odd.value, Conflict)
        with pytest.raises(HubResponseError, match="bad gateway") as proxy:
            session.request("GET", "/proxy")
        assert proxy.value.status == 502
        assert session.request("GET", "/unchanged", accept=(304,)).status_code == 304
    assert {auth for _, auth, _ in Handler.seen} == {"Bearer secret"}


def test_transport_failures_are_hub_unreachable() -> None:
    session = HubSession("http://127.0.0.1:1")
    with pytest.raises(HubUnreachable) as down:
        session.request("GET", "/")
    assert down.value.message.startswith("cannot reach the hub at http://127.0.0.1:1: ")


def test_closed_session_opens_a_new_pool_on_the_next_request(hub: str) -> None:
    session = HubSession(hub)
    session.request("GET", "/ok")
    session.close()
    assert session.request("GET", "/ok").status_code == 200
    session.close()


def test_download_resumes_from_what_the_partial_file_holds(hub: str, tmp_path: Path) -> None:
    partial = tmp_path / "sub" / "blob.part"
    partial.parent.mkdir()
    partial.write_bytes(BLOB[:1000])
    seen: list[int] = []
    with HubSession(hub) as session:
        session.download("/blob", partial, len(BLOB), progress=seen.append)
        assert partial.read_bytes() == BLOB
        session.download("/blob", partial, len(BLOB))  # complete: nothing fetched
    assert [rng for path, _, rng in Handler.seen if path == "/blob"] == ["bytes=1000-"]
    assert seen[0] == 1000
    assert sum(seen) == len(BLOB)


def test_a_download_past_the_manifest_size_is_refused_and_discarded(
    hub: str, tmp_path: Path
) -> None:
    partial = tmp_path / "blob.part"
    with HubSession(hub) as session, pytest.raises(DigestMismatch, match="more than the 1000"):
        session.download("/blob", partial, 1000)  # the hub sends 16 KiB
    assert not partial.exists()  # nothing of it kept to fill the disk


def test_poll_timeout_waits_long_only_for_the_answer() -> None:
    timeout = poll_timeout(30.0, connect_s=10.0)
    assert (timeout.connect, timeout.write, timeout.pool) == (10.0, 10.0, 10.0)
    assert timeout.read == 45.0
    assert isinstance(timeout, httpx.Timeout)


def test_a_site_agent_talks_to_its_hub_through_one_session(tmp_path: Path) -> None:
    """Desired state, blobs, reports, telemetry and federated tasks share one pool."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    state = SiteState(state_dir / "state.db")
    # The agent reads the pinned hub key at start: a real one (its value does not matter here).
    key = public_key_text(Ed25519PrivateKey.generate().public_key())
    state.save_credentials(Credentials("http://127.0.0.1:1", "plant-eu", "t", key))
    state.close()
    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({"federation": {"participate": False}}))
    agent = SiteAgent(SiteSettings(state_dir=state_dir, config_file=config))
    try:
        assert agent.federated is not None
        assert agent.session.url == "http://127.0.0.1:1"
        assert agent.link.session is agent.session
        assert agent.federated.session is agent.session
        assert agent._sender.session is agent.session
    finally:
        agent.stop()
