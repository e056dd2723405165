"""TLS on the builtin server and client, on loopback: chains, identities, refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from modelfleet.errors import PeerMismatch, TransportFailure
from modelfleet.pki import FleetCA, generate_key, site_identity
from modelfleet.pki.keys import load_private_key, save_private_key
from modelfleet.pki.tls import PEER_EXTENSION, ServerTlsFiles, TlsFiles
from modelfleet.transport import server as builtin
from modelfleet.transport.client import Origin, Pool

DAY = timedelta(days=1)


async def whoami(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the scheme and the identity the client certificate names."""
    await receive()
    peer = scope["extensions"].get(PEER_EXTENSION)
    body = json.dumps({"scheme": scope["scheme"], "peer": str(peer.identity) if peer else None})
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body.encode()})


@dataclass
class Pki:
    root: Path
    ca: FleetCA

    def holder(self, name: str) -> TlsFiles:
        key = generate_key()
        issued = self.ca.issue_for_key(key, site_identity(name), ("127.0.0.1",), DAY)
        save_private_key(key, self.root / f"{name}.key")
        (self.root / f"{name}.pem").write_bytes(issued.pem)
        return TlsFiles(self.root / "ca.pem", self.root / f"{name}.pem", self.root / f"{name}.key")


@pytest.fixture
def pki(tmp_path: Path) -> Iterator[Pki]:
    ca = FleetCA.create(tmp_path / "ca")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    return Pki(tmp_path, ca)


def serve(files: TlsFiles, client_ca: Path | None) -> Any:
    assert files.cert_file is not None
    assert files.key_file is not None
    tls = ServerTlsFiles(files.cert_file, files.key_file, client_ca)
    return builtin.start_builtin(whoami, "127.0.0.1", 0, ssl=tls.context())


def test_identity_checked_and_client_certificates_seen(pki: Pki) -> None:
    site_a = pki.holder("plant-a")
    gateway = pki.holder("gw")

    async def scenario() -> None:
        server = await serve(site_a, pki.root / "ca.pem")
        port = server.sockets[0].getsockname()[1]
        url = f"https://127.0.0.1:{port}"
        plain = Pool(tls=TlsFiles(pki.root / "ca.pem"))
        answer = await plain.request(Origin.parse(url, site_identity("plant-a")), "GET", "/")
        assert json.loads(answer.body) == {"scheme": "https", "peer": None}
        # The caller chose plant-b; plant-a answers at that URL: refused before sending.
        with pytest.raises(PeerMismatch, match="is not site plant-b"):
            await plain.request(Origin.parse(url, site_identity("plant-b")), "GET", "/")
        mtls = Pool(tls=gateway)
        answer = await mtls.request(Origin.parse(url), "GET", "/")
        assert json.loads(answer.body)["peer"] == "site gw"
        # No fleet CA: the chain does not verify.
        with pytest.raises(TransportFailure, match="does not verify against the fleet CA"):
            await Pool(tls=TlsFiles(None)).request(Origin.parse(url), "GET", "/")
        # Plain HTTP to the TLS port: a failure, not a hang or a traceback.
        with pytest.raises(TransportFailure):
            await Pool().request(Origin.parse(f"http://127.0.0.1:{port}"), "GET", "/")
        for pool in (plain, mtls):
            pool.close()
        server.close()

    asyncio.run(scenario())


def test_tls_client_at_a_plain_port_fails_clearly(pki: Pki) -> None:
    async def scenario() -> None:
        server = await builtin.start_builtin(whoami, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = Pool(tls=TlsFiles(pki.root / "ca.pem"))
        with pytest.raises(TransportFailure, match=r"TLS with https://127\.0\.0\.1"):
            await pool.request(Origin.parse(f"https://127.0.0.1:{port}"), "GET", "/")
        answer = await Pool().request(Origin.parse(f"http://127.0.0.1:{port}"), "GET", "/")
        assert json.loads(answer.body) == {"scheme": "http", "peer": None}
        server.close()

    asyncio.run(scenario())


def test_header_injection_is_refused_where_headers_are_written() -> None:
    from modelfleet.errors import InvalidInput

    async def scenario() -> None:
        pool = Pool()
        origin = Origin.parse("http://127.0.0.1:9")
        for headers in (
            {"x-request-id": "a\r\nx-injected: yes"},
            {"x-request-id": "\u20ac"},
            {"bad name": "v"},
        ):
            with pytest.raises(InvalidInput, match="refusing to send header"):
                await pool.request(origin, "POST", "/v2/models/m/infer", b"{}", headers)
        with pytest.raises(InvalidInput, match="not a valid request line"):
            await pool.request(origin, "GET", "/a b")

    asyncio.run(scenario())


def test_a_site_certificate_cannot_pass_for_the_hub(pki: Pki) -> None:
    """A fleet certificate that names a site, serving where the hub should be, is refused
    by every hub client, though its chain and host name verify."""
    import threading

    from modelfleet.errors import TlsError
    from modelfleet.transport.session import HubSession

    impostor = pki.holder("plant-x")
    ready = threading.Event()
    port: list[int] = []
    loop = asyncio.new_event_loop()
    done = asyncio.Event()

    async def run() -> None:
        server = await serve(impostor, None)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        await done.wait()
        server.close()

    thread = threading.Thread(target=lambda: loop.run_until_complete(run()), daemon=True)
    thread.start()
    assert ready.wait(10)
    session = HubSession(f"https://127.0.0.1:{port[0]}", tls=TlsFiles(pki.root / "ca.pem"))
    with session, pytest.raises(TlsError, match="names site plant-x, not the hub"):
        session.request("GET", "/healthz")
    loop.call_soon_threadsafe(done.set)
    thread.join(10)


def test_a_renewed_client_certificate_is_presented_on_new_connections(pki: Pki) -> None:
    """A site renews its certificate in place; the pool it calls other sites with (the
    cascade's, the router's) presents the new one from its next connection, not the old
    one until it expires."""
    site = pki.holder("plant-a")
    caller = pki.holder("plant-b")

    async def scenario() -> None:
        server = await serve(site, pki.root / "ca.pem")
        port = server.sockets[0].getsockname()[1]
        origin = Origin.parse(f"https://127.0.0.1:{port}")
        pool = Pool(tls=caller)
        first = pool._ssl()
        assert pool._ssl() is first  # unchanged files: one context
        answer = await pool.request(origin, "GET", "/")
        assert json.loads(answer.body)["peer"] == "site plant-b"
        # Renewal: a new certificate for the same key, written over the old file.
        assert caller.cert_file is not None
        key = load_private_key(pki.root / "plant-b.key")
        renewed = pki.ca.issue_for_key(key, site_identity("plant-b"), ("127.0.0.1",), 2 * DAY)
        caller.cert_file.write_bytes(renewed.pem)
        assert pool._ssl() is not first
        pool.close()
        server.close()

    asyncio.run(scenario())
