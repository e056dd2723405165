"""A site's identity: its key and certificate, the fleet CA it pinned, enrollment, renewal.

Files (``tls/`` in the site's state directory, mode 0700)::

    tls/site.key   the key this site made at enrollment (0600); it never leaves the site
    tls/site.pem   its certificate from the fleet CA (names modelfleet://site/<name>)
    tls/ca.pem     the fleet CA, pinned at enrollment
    tls/keyset.json  the hub's signing keys this site trusts
    tls/grants.json  the last signed grant list (see :mod:`modelfleet.site.access`)

Enrollment, when the hub speaks TLS (:func:`enroll_site`):

1. the token is ``mfe_<secret>@<fingerprint>``; without a fingerprint, nothing is sent;
2. the CA is fetched from ``/api/v1/enroll/ca`` *without* verifying anything, and must hash
   to the token's fingerprint; a proxy presenting another CA is refused here;
3. a new key and CSR are made, and the token goes to the hub over a connection verified
   against that CA: only the genuine hub ever sees the secret;
4. the certificate, the CA and the hub's signing key set (verified) are written.

The certificate serves both ways: as the site's server certificate (its OIP endpoint) and
as its client certificate towards the hub. :meth:`SiteIdentity.due` says when to renew
(two thirds into its life); renewal keeps the key (:func:`renew`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from modelfleet.errors import InvalidInput, NotFound, VerificationError
from modelfleet.pki import generate_key, make_csr, site_identity
from modelfleet.pki.ca import load_certificate
from modelfleet.pki.files import write_public_file
from modelfleet.pki.keys import load_private_key, save_private_key
from modelfleet.pki.tls import ServerTlsFiles, TlsFiles
from modelfleet.registry.keyset import KeySet, accept_keyset
from modelfleet.registry.signing import load_public_key
from modelfleet.transport.session import HubSession

__all__ = ["Enrolled", "SiteIdentity", "enroll_site", "renew"]

TLS_DIR = "tls"
_FINGERPRINT_SEP = "@"


@dataclass(frozen=True)
class SiteIdentity:
    """The TLS files of one site's state directory."""

    state_dir: Path

    @property
    def dir(self) -> Path:
        return self.state_dir / TLS_DIR

    @property
    def key_file(self) -> Path:
        return self.dir / "site.key"

    @property
    def cert_file(self) -> Path:
        return self.dir / "site.pem"

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def keyset_file(self) -> Path:
        return self.dir / "keyset.json"

    @property
    def grants_file(self) -> Path:
        """The last grant list the hub signed for this site (infer tokens it honours)."""
        return self.dir / "grants.json"

    def exists(self) -> bool:
        return self.cert_file.exists() and self.key_file.exists() and self.ca_file.exists()

    def client(self, now: datetime | None = None) -> TlsFiles:
        """For calls to the hub: the pinned CA, and the certificate while it is valid (an
        expired one would fail the handshake; the site then renews with its token)."""
        if not self.exists():
            return TlsFiles(self.ca_file if self.ca_file.exists() else None)
        if self.not_after() <= (now or datetime.now(UTC)):
            return TlsFiles(self.ca_file)
        return TlsFiles(self.ca_file, self.cert_file, self.key_file)

    def server(self) -> ServerTlsFiles:
        """For the site's OIP server: its certificate; clients with fleet certificates."""
        return ServerTlsFiles(self.cert_file, self.key_file, self.ca_file)

    def certificate(self) -> x509.Certificate:
        return load_certificate(self.cert_file.read_bytes(), "the site certificate")

    def not_after(self) -> datetime:
        return self.certificate().not_valid_after_utc

    def due(self, now: datetime | None = None) -> bool:
        """Two thirds into the certificate's life (or past it): time to renew."""
        cert = load_certificate(self.cert_file.read_bytes(), "the site certificate")
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        return (now or datetime.now(UTC)) >= start + (end - start) * 2 / 3

    def keys(self) -> KeySet | None:
        """The hub signing keys this site trusts (None before key sets: the pinned key)."""
        try:
            return KeySet.from_dict(json.loads(self.keyset_file.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise VerificationError(f"cannot read {self.keyset_file}: {exc}") from exc

    def save_keys(self, keys: KeySet) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # a site of a plain-HTTP hub
        write_public_file(self.keyset_file, json.dumps(keys.to_dict()).encode(), "key set")


@dataclass(frozen=True)
class Enrolled:
    site: str
    token: str
    public_key: str
    labels: dict[str, str]
    keys: KeySet | None


def _fingerprint(pem: bytes) -> str:
    der = load_certificate(pem, "the hub's CA").public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def enroll_site(
    hub_url: str, token: str, identity: SiteIdentity, hosts: tuple[str, ...] = ()
) -> Enrolled:
    """Enroll (module docstring). Plain ``http://`` hubs (``--insecure-http``) get the
    secret without any of the TLS steps; nothing else changes."""
    secret, _, fingerprint = token.strip().partition(_FINGERPRINT_SEP)
    if not hub_url.startswith("https://"):
        with HubSession(hub_url) as session:
            body = session.request("POST", "/api/v1/enroll", json={"token": secret}).json()
        return _enrolled(body, None)
    if not fingerprint:
        raise InvalidInput(
            "this enrollment token carries no CA fingerprint (…@<fingerprint>); copy the "
            "whole token `modelfleet site add` printed"
        )
    with HubSession(hub_url, tls=TlsFiles(verify=False)) as unverified:
        ca_pem = unverified.request("GET", "/api/v1/enroll/ca").json()["ca"].encode()
    if not hmac.compare_digest(_fingerprint(ca_pem), fingerprint):
        raise VerificationError(
            f"the hub at {hub_url} presented a CA whose fingerprint does not match the "
            "enrollment token's; the token was NOT sent (is something intercepting the "
            "connection?)"
        )
    staging = identity.dir.with_name(identity.dir.name + ".enrolling")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700, parents=True)
    try:
        write_public_file(staging / "ca.pem", ca_pem, "fleet CA")
        key = generate_key()
        save_private_key(key, staging / "site.key", "site key")
        # The CSR's identity is a placeholder: the hub decides it from the token.
        csr = make_csr(key, site_identity("enrolling"), hosts)
        with HubSession(hub_url, tls=TlsFiles(staging / "ca.pem")) as verified:
            body = verified.request(
                "POST", "/api/v1/enroll", json={"token": secret, "csr": csr.decode()}
            ).json()
        certificate = body.get("certificate")
        if not isinstance(certificate, str):
            raise VerificationError("the hub issued no certificate")
        write_public_file(staging / "site.pem", certificate.encode(), "site certificate")
        enrolled = _enrolled(body, KeySet.of(load_public_key(str(body["public_key"]))))
        if enrolled.keys is not None:
            write_public_file(
                staging / "keyset.json", json.dumps(enrolled.keys.to_dict()).encode(), "key set"
            )
        # In place in one rename: a crash leaves the old identity or the new, not half.
        old = identity.dir.with_name(identity.dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if identity.dir.exists():
            identity.dir.rename(old)
        staging.rename(identity.dir)
        shutil.rmtree(old, ignore_errors=True)
        return enrolled
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _enrolled(body: dict[str, Any], pinned: KeySet | None) -> Enrolled:
    keys = pinned
    keyset = body.get("keyset")
    if pinned is not None and isinstance(keyset, dict):
        keys = accept_keyset(pinned, str(keyset["text"]), str(keyset["signature"]))
    return Enrolled(
        site=str(body["site"]),
        token=str(body["token"]),
        public_key=str(body["public_key"]),
        labels={str(k): str(v) for k, v in dict(body["labels"]).items()},
        keys=keys,
    )


def renew(session: HubSession, site: str, identity: SiteIdentity) -> datetime:
    """A fresh certificate for the same key; the session switches to it. Returns its end."""
    try:
        key = load_private_key(identity.key_file)
    except NotFound as exc:
        raise InvalidInput(f"{identity.key_file} is missing: re-enroll this site") from exc
    csr = make_csr(key, site_identity(site), _hosts_of(identity))
    body = session.request(
        "POST", f"/api/v1/sites/{site}/certificate", json={"csr": csr.decode()}
    ).json()
    pem = str(body["certificate"]).encode()
    load_certificate(pem, "the renewed certificate")
    write_public_file(identity.cert_file, pem, "site certificate")
    session.reload(tls=identity.client())
    return identity.not_after()


def _hosts_of(identity: SiteIdentity) -> tuple[str, ...]:
    """The host names the current certificate carries (a renewal keeps them)."""
    sans = (
        identity.certificate().extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    )
    hosts = [str(v) for v in sans.get_values_for_type(x509.DNSName)]
    hosts += [str(v) for v in sans.get_values_for_type(x509.IPAddress)]
    return tuple(hosts)
