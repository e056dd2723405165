"""A certificate directory: what ``hub cert issue --out DIR`` writes and a gateway serves with.

Layout (the directory is mode 0700)::

    DIR/cert.pem   the certificate (``modelfleet://gateway/<name>`` plus host names)
    DIR/key.pem    its private key, mode 0600
    DIR/ca.pem     the fleet CA, to verify sites and the hub with

Issuing happens where the CA key is (the hub's data directory): local file access to it is
the root of trust, as for ``hub init``, so no network API can mint a gateway certificate.
Re-issuing into the same directory replaces the pair with a new key, key first and the
certificate last (as the hub renews its own): a server reading the directory notices the
new certificate at its next handshake and loads both, for the connections after that one
(:func:`~modelfleet.pki.tls.server_context`), so a gateway is renewed without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from modelfleet.errors import InvalidInput
from modelfleet.pki.ca import CA_CERT_FILE, FleetCA, IssuedCertificate
from modelfleet.pki.files import write_public_file
from modelfleet.pki.identity import Identity
from modelfleet.pki.keys import generate_key, save_private_key
from modelfleet.pki.tls import ServerTlsFiles, TlsFiles

__all__ = ["MAX_VALIDITY", "CertDir", "issue_to_dir"]

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
#: The longest a directory certificate may live (what public CAs issue at most): a gateway
#: certificate is renewed by re-running a command, so it must not be forgotten for years.
MAX_VALIDITY = timedelta(days=397)


@dataclass(frozen=True)
class CertDir:
    """The files of one certificate directory."""

    root: Path

    @property
    def cert_file(self) -> Path:
        return self.root / CERT_FILE

    @property
    def key_file(self) -> Path:
        return self.root / KEY_FILE

    @property
    def ca_file(self) -> Path:
        return self.root / CA_CERT_FILE

    def check(self) -> CertDir:
        """:class:`InvalidInput` naming what is missing, before a server tries to start."""
        missing = [p.name for p in (self.cert_file, self.key_file, self.ca_file) if not p.exists()]
        if missing:
            raise InvalidInput(
                f"{self.root} is not a certificate directory (missing {', '.join(missing)}); "
                "create one with `modelfleet hub cert issue --data-dir HUB_DIR --name NAME "
                f"--out {self.root}`"
            )
        return self

    def server(self) -> ServerTlsFiles:
        """Serve with this certificate; accept client certificates from the fleet CA."""
        return ServerTlsFiles(self.cert_file, self.key_file, self.ca_file)

    def client(self, ca_file: Path | None = None) -> TlsFiles:
        """Call fleet servers with this certificate, verifying them against ``ca_file``
        (default: the CA stored here)."""
        return TlsFiles(ca_file or self.ca_file, self.cert_file, self.key_file)


def issue_to_dir(
    ca: FleetCA, identity: Identity, hosts: tuple[str, ...], out: Path, validity: timedelta
) -> IssuedCertificate:
    """A new key and a certificate for ``identity`` and ``hosts`` in ``out`` (created 0700),
    replacing what was there; validity is bounded by :data:`MAX_VALIDITY`."""
    if validity <= timedelta(0) or validity > MAX_VALIDITY:
        raise InvalidInput(
            f"certificate validity must be more than 0 and at most {MAX_VALIDITY.days} days"
        )
    target = CertDir(Path(out))
    key = generate_key()
    issued = ca.issue_for_key(key, identity, hosts, validity)  # bad host names fail here
    target.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    new_key = target.key_file.with_suffix(".pem.new")
    new_cert = target.cert_file.with_suffix(".pem.new")
    for path in (new_key, new_cert):
        path.unlink(missing_ok=True)
    save_private_key(key, new_key, "certificate key")
    write_public_file(new_cert, issued.pem, "certificate")
    write_public_file(target.ca_file, ca.pem, "fleet CA")
    new_key.replace(target.key_file)
    new_cert.replace(target.cert_file)
    return issued
