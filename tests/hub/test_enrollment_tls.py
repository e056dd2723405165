"""Enrollment and site identity against a real hub serving HTTPS on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelfleet.errors import InvalidInput, TlsError, Unauthenticated, VerificationError
from modelfleet.hub.bootstrap import init_hub
from modelfleet.pki import identity_of, site_identity
from modelfleet.pki.tls import TlsFiles
from modelfleet.sim.launcher import HubProcess
from modelfleet.site.identity import SiteIdentity, enroll_site, renew
from modelfleet.transport.session import HubSession


class Hub:
    def __init__(self, root: Path) -> None:
        self.init = init_hub(root)
        self.proc = HubProcess(root, tls=True).start()
        self.admin = HubSession(
            self.proc.url, self.init.admin_token, tls=TlsFiles(self.proc.ca_file)
        )

    def add_site(self, name: str) -> str:
        body = self.admin.request("POST", "/api/v1/sites", json={"name": name, "labels": {}})
        return str(body.json()["enrollment_token"])

    def enroll_attempts(self) -> int:
        rows = self.admin.request("GET", "/api/v1/audit", params={"limit": 500}).json()
        items = rows["items"] if isinstance(rows, dict) else rows
        return sum(1 for r in items if r["action"] == "site.enroll")

    def close(self) -> None:
        self.admin.close()
        self.proc.stop()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    made = Hub(tmp_path / "hub")
    yield made
    made.close()


def test_enroll_pins_the_ca_and_authenticates_with_its_certificate(
    hub: Hub, tmp_path: Path
) -> None:
    token = hub.add_site("plant-a")
    assert "@" in token  # the CA fingerprint rides along
    identity = SiteIdentity(tmp_path / "site")
    enrolled = enroll_site(hub.proc.url, token, identity, hosts=("127.0.0.1",))
    assert enrolled.site == "plant-a"
    assert identity_of(identity.certificate()) == site_identity("plant-a")
    assert identity.ca_file.read_bytes() == hub.proc.ca_file.read_bytes()
    assert enrolled.keys is not None
    assert hub.init.key_id in enrolled.keys.ids()
    # The certificate alone (no bearer token) authenticates the site to the hub.
    with HubSession(hub.proc.url, tls=identity.client()) as site:
        desired = site.request("GET", "/api/v1/sites/plant-a/desired-state").json()
        assert desired["site"] == "plant-a"
        before = identity.certificate().serial_number
        renew(site, "plant-a", identity)
        assert identity.certificate().serial_number != before
        site.request("GET", "/api/v1/sites/plant-a/desired-state")
        # Another site's resources stay out of reach.
        hub.add_site("plant-b")
        with pytest.raises(Exception, match="may not act on site 'plant-b'"):
            site.request("GET", "/api/v1/sites/plant-b/desired-state")
    # Removing the site revokes its certificate at once.
    hub.admin.request("DELETE", "/api/v1/sites/plant-a")
    revoked = HubSession(hub.proc.url, tls=identity.client())
    with revoked, pytest.raises(Unauthenticated, match="revoked or unknown"):
        revoked.request("GET", "/api/v1/sites/plant-a/desired-state")


def test_a_hub_with_another_ca_never_sees_the_token(hub: Hub, tmp_path: Path) -> None:
    token = hub.add_site("plant-a")
    impostor = Hub(tmp_path / "impostor")  # presents a valid certificate of another fleet
    try:
        before = impostor.enroll_attempts()
        with pytest.raises(VerificationError, match="token was NOT sent"):
            enroll_site(impostor.proc.url, token, SiteIdentity(tmp_path / "site"))
        assert impostor.enroll_attempts() == before
    finally:
        impostor.close()
    assert not (tmp_path / "site" / "tls").exists()
    # The genuine hub still accepts the unused token.
    assert enroll_site(hub.proc.url, token, SiteIdentity(tmp_path / "site")).site == "plant-a"
    secret = token.partition("@")[0]
    with pytest.raises(InvalidInput, match="no CA fingerprint"):
        enroll_site(hub.proc.url, secret, SiteIdentity(tmp_path / "other"))


def test_clients_without_the_ca_or_speaking_plain_http_get_a_clear_error(hub: Hub) -> None:
    stranger = HubSession(hub.proc.url, tls=TlsFiles(None))
    with stranger, pytest.raises(TlsError, match="does not verify against the fleet CA"):
        stranger.request("GET", "/healthz")
    plain = hub.proc.url.replace("https://", "http://")
    with HubSession(plain) as session, pytest.raises(TlsError, match="use https://"):
        session.request("GET", "/healthz")
    log = (hub.proc.data_dir / "hub.log").read_text()
    assert "Traceback" not in log
