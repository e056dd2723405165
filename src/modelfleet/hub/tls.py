"""The hub's TLS material in its data directory: the fleet CA and the hub's certificate.

Layout (``tls/`` in the data directory, mode 0700)::

    tls/ca.pem  tls/ca.key     the fleet CA (``hub init``); the key never leaves this folder
    tls/hub.pem tls/hub.key    the hub's server certificate and its key

The hub's certificate names ``modelfleet://hub`` plus its host names: the loopback names
always, the machine's host name, and whatever ``hub init --hostname/--san`` recorded. ``hub
serve`` renews it on start when less than a third of its lifetime is left or when the host
names changed, so a hub never serves an expired certificate after a long stop.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from modelfleet.errors import InvalidInput, NotFound
from modelfleet.pki import FleetCA, generate_key, hub_identity
from modelfleet.pki.ca import CA_CERT_FILE, load_certificate
from modelfleet.pki.files import write_public_file
from modelfleet.pki.identity import host_names
from modelfleet.pki.keys import load_private_key, save_private_key
from modelfleet.pki.tls import ServerTlsFiles

__all__ = ["DEFAULT_HOSTS", "HubTls"]

TLS_DIR = "tls"
HUB_CERT = "hub.pem"
HUB_KEY = "hub.key"
HOSTS_FILE = "hosts.json"
#: Always in the hub's certificate: every client on the hub's own machine can verify it.
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
HUB_CERT_VALIDITY = timedelta(days=397)  # the longest public CAs issue: a yearly habit


def machine_hosts() -> tuple[str, ...]:
    """The loopback names and this machine's own host name (when it is a valid DNS name)."""
    names = list(DEFAULT_HOSTS)
    try:
        hostname = socket.gethostname()
        host_names([hostname])
        names.append(hostname)
    except (OSError, InvalidInput):
        pass
    return tuple(names)


@dataclass(frozen=True)
class HubTls:
    root: Path

    @property
    def dir(self) -> Path:
        return self.root / TLS_DIR

    @property
    def ca_file(self) -> Path:
        return self.dir / CA_CERT_FILE

    @property
    def cert_file(self) -> Path:
        return self.dir / HUB_CERT

    @property
    def key_file(self) -> Path:
        return self.dir / HUB_KEY

    def exists(self) -> bool:
        return self.ca_file.exists()

    def server_files(self) -> ServerTlsFiles:
        """For ``hub serve``: its certificate, and client certificates from the fleet CA."""
        return ServerTlsFiles(self.cert_file, self.key_file, self.ca_file)

    def ca(self) -> FleetCA:
        return FleetCA.load(self.dir)

    def hosts(self) -> tuple[str, ...]:
        """The host names the hub's certificate carries (recorded at ``hub init``)."""
        try:
            extra = json.loads((self.dir / HOSTS_FILE).read_text())
        except (OSError, ValueError):
            extra = []
        names = [*machine_hosts(), *(str(h) for h in extra if isinstance(h, str))]
        return tuple(dict.fromkeys(h.lower() for h in names))

    @classmethod
    def create(cls, root: Path, extra_hosts: tuple[str, ...] = ()) -> HubTls:
        """The fleet CA and the hub's first certificate; refuses to replace a CA."""
        tls = cls(Path(root))
        host_names(list(extra_hosts))  # a bad --san fails before anything is written
        FleetCA.create(tls.dir)
        write_public_file(
            tls.dir / HOSTS_FILE, (json.dumps(list(extra_hosts)) + "\n").encode(), "host list"
        )
        tls.renew_server_certificate()
        return tls

    def renew_server_certificate(self) -> None:
        """Issue a fresh hub certificate (new key) for :meth:`hosts`."""
        key = generate_key()
        issued = self.ca().issue_for_key(key, hub_identity(), self.hosts(), HUB_CERT_VALIDITY)
        for path in (self.key_file.with_suffix(".key.new"), self.cert_file.with_suffix(".pem.new")):
            path.unlink(missing_ok=True)
        save_private_key(key, self.key_file.with_suffix(".key.new"), "hub TLS key")
        write_public_file(self.cert_file.with_suffix(".pem.new"), issued.pem, "hub certificate")
        # Key first, then certificate: a reader never pairs a new certificate with the old key
        # for longer than the two renames take, and a crash between them is repaired by the
        # next start (the pair no longer matches, so it is renewed again).
        self.key_file.with_suffix(".key.new").replace(self.key_file)
        self.cert_file.with_suffix(".pem.new").replace(self.cert_file)

    def _pair_matches(self, cert: x509.Certificate) -> bool:
        try:
            key = load_private_key(self.key_file)
        except (NotFound, InvalidInput):
            return False
        raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        return bool(key.public_key().public_bytes(*raw) == cert.public_key().public_bytes(*raw))

    def ensure_server_certificate(self, now: datetime | None = None) -> bool:
        """Renew the hub's certificate if it is missing, unreadable, past two thirds of its
        life, or lacks a host name; True if it was renewed."""
        now = now or datetime.now(UTC)
        try:
            cert = load_certificate(self.cert_file.read_bytes(), "the hub certificate")
        except (OSError, InvalidInput):
            self.renew_server_certificate()
            return True
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        stale = now >= start + (end - start) * 2 / 3
        wanted = {str(n.value).lower() for n in host_names(list(self.hosts()))}
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        present = {str(v).lower() for v in sans.get_values_for_type(x509.DNSName)}
        present |= {str(v).lower() for v in sans.get_values_for_type(x509.IPAddress)}
        if stale or not wanted <= present or not self._pair_matches(cert):
            self.renew_server_certificate()
            return True
        return False
