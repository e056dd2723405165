"""Site certificates on the hub: issued at enrollment, renewed by the agent, checked per call.

The agent makes its own key and sends a CSR; :class:`SiteCertificates` has the fleet CA
sign it for the site named by the enrollment token (never by the CSR), before anything is
written, so a bad CSR leaves the token usable; the sites service then records its serial
(:meth:`~modelfleet.hub.store.repos.sites.SiteRepo.enroll`, in the same transaction that
consumes the token and replaces the site's bearer token) and hands back the certificate,
the CA and the signing key set. From
then on the site authenticates to the hub with that certificate (mTLS); the hub accepts it
while its serial is recorded for that site and unrevoked (:meth:`SiteCertificates.check`,
cached for ``CHECK_CACHE_S`` so a revocation through any replica takes effect within that).

Enrollment tokens carry the CA's fingerprint after an ``@``: ``mfe_<secret>@<fingerprint>``.
The agent fetches the CA without verifying anything, checks it hashes to the fingerprint,
and only then opens a verified connection and sends the secret: a proxy in the path that
presents another certificate never sees the token (as ``kubeadm join`` does with its CA
hash).
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from datetime import timedelta

from cryptography.hazmat.primitives import serialization

from modelfleet.errors import InvalidInput, Unauthenticated
from modelfleet.hub.store import Store
from modelfleet.hub.tls import HubTls
from modelfleet.pki import IssuedCertificate, site_identity
from modelfleet.pki.identity import Identity

__all__ = ["CHECK_CACHE_S", "SiteCertificates", "ca_fingerprint_token", "split_enrollment_token"]

#: How long a certificate check is remembered (a revocation takes effect within this).
CHECK_CACHE_S = 1.0
_FINGERPRINT_SEP = "@"


def ca_fingerprint_token(ca_der: bytes) -> str:
    """The CA fingerprint as enrollment tokens carry it: base64url of its sha256."""
    return base64.urlsafe_b64encode(hashlib.sha256(ca_der).digest()).rstrip(b"=").decode()


def split_enrollment_token(token: str) -> tuple[str, str | None]:
    """``(secret, fingerprint)`` of ``mfe_<secret>@<fingerprint>``; None without one."""
    secret, sep, fingerprint = token.strip().partition(_FINGERPRINT_SEP)
    return secret, (fingerprint if sep else None)


class SiteCertificates:
    def __init__(self, store: Store, tls: HubTls, validity: timedelta) -> None:
        self.store = store
        self.tls = tls
        self.validity = validity
        self._ca = tls.ca()
        self._checked: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    @property
    def ca_pem(self) -> bytes:
        return self._ca.pem

    def enrollment_token(self, secret: str) -> str:
        """What an operator is given: the secret and the CA's fingerprint, one string."""
        der = self._ca.cert.public_bytes(serialization.Encoding.DER)
        return f"{secret}{_FINGERPRINT_SEP}{ca_fingerprint_token(der)}"

    def issue(self, site_name: str, csr_pem: bytes) -> IssuedCertificate:
        """Check the CSR and sign the site's certificate, recording nothing: enrollment
        records it in its own transaction (a certificate that is never recorded is one
        the hub never accepts)."""
        return self._issue(site_name, csr_pem)

    def renew(self, site_name: str, csr_pem: bytes) -> IssuedCertificate:
        issued = self._issue(site_name, csr_pem)
        self.store.sites.add_certificate(site_name, issued.serial, issued.not_after)
        return issued

    def _issue(self, site_name: str, csr_pem: bytes) -> IssuedCertificate:
        if not csr_pem:
            raise InvalidInput("a certificate signing request (csr) is required")
        # Host names are the site's to choose (a site on the hub's machine names loopback
        # too); what keeps a site from passing for the hub is the identity, which the CA
        # sets from the hub's records and every fleet client checks.
        return self._ca.issue_from_csr(csr_pem, site_identity(site_name), self.validity)

    def check(self, identity: Identity | None, serial: str | None) -> str | None:
        """The site a verified client certificate authenticates, or None if it names no
        site; :class:`Unauthenticated` if the hub never issued it or it was revoked."""
        if identity is None or identity.kind != "site" or serial is None:
            return None
        now = time.monotonic()
        with self._lock:
            cached = self._checked.get(serial)
        if cached is not None and now - cached[0] < CHECK_CACHE_S:
            site = cached[1]
        else:
            record = self.store.sites.certificate(serial)
            valid = record is not None and record.valid(self.store.now())
            site = record.site if record is not None and valid else None
            with self._lock:
                if len(self._checked) > 10_000:
                    self._checked.clear()
                self._checked[serial] = (now, site)
        if site is None or site != identity.name:
            raise Unauthenticated(
                f"the certificate of {identity} is revoked or unknown to this hub; "
                "re-enroll the site (`modelfleet site add --reissue NAME`)"
            )
        return site

    def forget(self) -> None:
        """Drop cached checks (this process revoked something: take effect at once)."""
        with self._lock:
            self._checked.clear()
