"""Private keys and certificate signing requests.

Every holder makes its own key where it lives (a site at enrollment, the hub at ``hub
init``); only a CSR (the public key plus the names asked for, signed by the key) ever
travels. Keys are ECDSA P-256: every TLS stack a user might point at a site speaks it
(curl, browsers, Triton's client, Go, Java), and signing is fast.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from modelfleet.errors import InvalidInput, NotFound
from modelfleet.pki.files import write_new_private_file
from modelfleet.pki.identity import Identity, host_names

__all__ = ["PrivateKey", "generate_key", "load_private_key", "make_csr", "save_private_key"]

PrivateKey = ec.EllipticCurvePrivateKey


def generate_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def save_private_key(key: PrivateKey, path: Path, what: str = "private key") -> None:
    """Write ``key`` (PEM, PKCS8) to a new 0600 file; :class:`Conflict` if it exists."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_new_private_file(path, pem, what)


def load_private_key(path: Path) -> PrivateKey:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise NotFound(f"private key {path} does not exist") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput(f"{path} is not an ECDSA private key")
    return key


def make_csr(key: PrivateKey, identity: Identity, hosts: tuple[str, ...] = ()) -> bytes:
    """A PEM CSR for ``identity`` (its URI SAN) and ``hosts`` (DNS names or IP addresses)."""
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
    sans += host_names(hosts)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.name)]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)
