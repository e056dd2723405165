"""The fleet CA: created once by ``hub init``, it issues every certificate in the fleet.

What it issues, and why so:

- **The hub's server certificate** (``modelfleet://hub`` plus its host names), from a key the
  hub made itself.
- **A site's certificate** from the CSR the site sent at enrollment or renewal: its key never
  leaves the site. The identity comes from the hub's records (the enrollment token, the site
  being renewed), never from the CSR; the CSR contributes only its public key and the host
  names the site is reachable at. One certificate serves both as the site's server
  certificate (its OIP endpoint) and as its client certificate towards the hub (mTLS), so a
  site has one key and one certificate to renew.
- Certificates are short-lived (the hub's settings say how long); they start a few minutes
  in the past so a site whose clock runs slightly behind accepts a fresh one.

The CA is private to the fleet and is trusted only by fleet clients (``MODELFLEET_CA_FILE``);
it is not name-constrained, because the host names operators give their sites are theirs to
choose. Its key is the root of trust: mode 0600, in the hub's data directory, never sent.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from modelfleet.errors import Conflict, InvalidInput, NotFound
from modelfleet.pki.files import write_public_file
from modelfleet.pki.identity import MAX_HOSTS, Identity, fingerprint, host_names, identity_of
from modelfleet.pki.keys import PrivateKey, generate_key, load_private_key, save_private_key

__all__ = ["MAX_CSR_BYTES", "FleetCA", "IssuedCertificate", "load_certificate"]

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
#: A CSR larger than this is refused before it is parsed.
MAX_CSR_BYTES = 16 * 1024
#: Certificates start this long before they are issued, so a peer whose clock is up to this
#: far behind the hub accepts one issued a moment ago (docs/security.md, "Clock skew").
BACKDATE = timedelta(minutes=10)
_ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)


@dataclass(frozen=True)
class IssuedCertificate:
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def serial(self) -> str:
        """The serial number as hex: how the hub records and revokes it."""
        return format(self.cert.serial_number, "x")

    @property
    def not_after(self) -> datetime:
        return self.cert.not_valid_after_utc

    @property
    def identity(self) -> Identity | None:
        return identity_of(self.cert)


def load_certificate(data: bytes, what: str = "certificate") -> x509.Certificate:
    """One PEM certificate; :class:`InvalidInput` if ``data`` is not one."""
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise InvalidInput(f"{what} is not a PEM certificate") from exc


class FleetCA:
    """The CA's certificate and key, and the certificates it issues."""

    def __init__(self, cert: x509.Certificate, key: PrivateKey) -> None:
        self.cert = cert
        self.key = key

    # --- creation and storage --------------------------------------------------------------

    @classmethod
    def create(
        cls, directory: Path, *, name: str = "modelfleet fleet CA", validity_days: int = 3650
    ) -> FleetCA:
        """A new CA in ``directory`` (``ca.key`` 0600, ``ca.pem``); refuses to replace one."""
        if (Path(directory) / CA_KEY_FILE).exists():
            raise Conflict(f"a fleet CA already exists in {directory}; refusing to replace it")
        key = generate_key()
        now = datetime.now(UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + timedelta(days=validity_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        directory = Path(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        save_private_key(key, directory / CA_KEY_FILE, "fleet CA key")
        write_public_file(
            directory / CA_CERT_FILE, cert.public_bytes(serialization.Encoding.PEM), "fleet CA"
        )
        return cls(cert, key)

    @classmethod
    def load(cls, directory: Path) -> FleetCA:
        directory = Path(directory)
        try:
            pem = (directory / CA_CERT_FILE).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(
                f"no fleet CA in {directory} (run `modelfleet hub init` to create one)"
            ) from exc
        return cls(load_certificate(pem, "the fleet CA"), load_private_key(directory / CA_KEY_FILE))

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)

    # --- issuing ---------------------------------------------------------------------------

    def issue_for_key(
        self, key: PrivateKey, identity: Identity, hosts: tuple[str, ...], validity: timedelta
    ) -> IssuedCertificate:
        """A certificate for a key held here (the hub's own server certificate)."""
        return self._issue(key.public_key(), identity, hosts, validity)

    def issue_from_csr(
        self,
        csr_pem: bytes,
        identity: Identity,
        validity: timedelta,
        *,
        refused_hosts: frozenset[str] = frozenset(),
    ) -> IssuedCertificate:
        """A certificate for ``identity`` with the public key and host names of ``csr_pem``.

        The CSR must be well formed, signed by its own key (proof the requester holds it),
        use an allowed curve and ask for at most :data:`~.identity.MAX_HOSTS` valid host
        names, none of them in ``refused_hosts`` (the hub's own names: a site must not be
        able to pass for the hub). Any URI it carries is ignored: ``identity`` decides.
        """
        if len(csr_pem) > MAX_CSR_BYTES:
            raise InvalidInput(f"certificate request larger than {MAX_CSR_BYTES} bytes")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise InvalidInput("not a PEM certificate signing request (CSR)") from exc
        try:
            public = csr.public_key()
            valid = csr.is_signature_valid
        except (ValueError, UnsupportedAlgorithm, InvalidSignature) as exc:
            raise InvalidInput("the certificate request's key or signature is unusable") from exc
        if not valid:
            raise InvalidInput("the certificate request is not signed by its own key")
        if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
            public.curve, _ALLOWED_CURVES
        ):
            raise InvalidInput("the certificate request's key must be ECDSA P-256 or P-384")
        hosts = _requested_hosts(csr)
        refused = sorted(h for h in hosts if h.lower() in refused_hosts)
        if refused:
            raise InvalidInput(
                f"the certificate request asks for the hub's own host name(s) {refused}; "
                "a site certificate may not name the hub's addresses"
            )
        return self._issue(public, identity, hosts, validity)

    def _issue(
        self,
        public: ec.EllipticCurvePublicKey,
        identity: Identity,
        hosts: tuple[str, ...],
        validity: timedelta,
    ) -> IssuedCertificate:
        now = datetime.now(UTC)
        not_after = min(now + validity, self.cert.not_valid_after_utc)
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
        sans += host_names(hosts)
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.name)]))
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return IssuedCertificate(cert)


def _requested_hosts(csr: x509.CertificateSigningRequest) -> tuple[str, ...]:
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    except ValueError as exc:
        raise InvalidInput("the certificate request's extensions are malformed") from exc
    hosts = [str(v) for v in sans.get_values_for_type(x509.DNSName)]
    hosts += [str(v) for v in sans.get_values_for_type(x509.IPAddress)]
    if len(hosts) > MAX_HOSTS:
        raise InvalidInput(f"at most {MAX_HOSTS} host names per certificate, got {len(hosts)}")
    return tuple(hosts)
