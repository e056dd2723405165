"""The hub's CA and certificate on disk: created once, renewed when due or mismatched."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from modelfleet.errors import Conflict, InvalidInput
from modelfleet.hub.tls import HubTls
from modelfleet.pki import hub_identity, identity_of
from modelfleet.pki.ca import load_certificate


def cert_of(tls: HubTls) -> x509.Certificate:
    return load_certificate(tls.cert_file.read_bytes())


def test_create_names_the_hub_and_its_hosts(tmp_path: Path) -> None:
    tls = HubTls.create(tmp_path, ("hub.example.com", "10.1.2.3"))
    assert stat.S_IMODE(tls.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tls.dir / "ca.key").stat().st_mode) == 0o600
    cert = cert_of(tls)
    assert identity_of(cert) == hub_identity()
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = sans.get_values_for_type(x509.DNSName)
    assert {"localhost", "hub.example.com"} <= set(dns)
    assert {"127.0.0.1", "10.1.2.3", "::1"} <= {
        str(i) for i in sans.get_values_for_type(x509.IPAddress)
    }
    with pytest.raises(Conflict):
        HubTls.create(tmp_path)
    with pytest.raises(InvalidInput, match="invalid host name"):
        HubTls.create(tmp_path / "other", ("*.example.com",))
    assert not (tmp_path / "other" / "tls" / "ca.key").exists()  # nothing half-made


def test_renewed_when_due_or_when_key_and_certificate_disagree(tmp_path: Path) -> None:
    tls = HubTls.create(tmp_path)
    serial = cert_of(tls).serial_number
    assert tls.ensure_server_certificate() is False
    assert cert_of(tls).serial_number == serial
    later = datetime.now(UTC) + timedelta(days=300)
    assert tls.ensure_server_certificate(later) is True
    renewed = cert_of(tls).serial_number
    assert renewed != serial
    # A crash between the two renames of a renewal: the key is new, the certificate old.
    (tls.dir / "other.key").write_bytes(tls.key_file.read_bytes())
    tls.renew_server_certificate()
    tls.cert_file.write_bytes(tls.cert_file.read_bytes())
    tls.key_file.unlink()
    (tls.dir / "other.key").rename(tls.key_file)
    assert tls.ensure_server_certificate() is True
