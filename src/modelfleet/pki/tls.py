"""TLS contexts for every server and client in the fleet, built in one place.

Servers (hub, site, gateway) present a certificate from the fleet CA and *ask* for a client
certificate (``CERT_OPTIONAL``): a site or gateway proves who it is with its certificate,
an operator or a program with a bearer token over the same port, so one port serves both.
Clients verify the server's chain against the fleet CA and its host name against the URL,
and our own clients also check the identity the certificate names (:mod:`.identity`).

TLS 1.2 is the floor (TLS 1.3 is preferred when both ends speak it): older versions have
known weaknesses and every client a user might bring speaks 1.2.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from modelfleet.errors import InvalidInput
from modelfleet.pki.identity import Identity, identity_of

__all__ = [
    "PEER_EXTENSION",
    "Peer",
    "ServerTlsFiles",
    "TlsFiles",
    "client_context",
    "peer_certificate",
    "peer_identity",
    "server_context",
    "tls_extensions",
]

#: The ASGI scope extension our servers add: the verified client certificate's holder.
PEER_EXTENSION = "modelfleet.peer"


@dataclass(frozen=True)
class Peer:
    """Who a verified client certificate names, and its serial (hex) for revocation."""

    identity: Identity | None
    serial: str


@dataclass(frozen=True)
class TlsFiles:
    """Where a client's TLS material lives: the CA it trusts (None: the system's roots, for
    a hub behind a public certificate) and its own certificate and key, if it has them."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    #: False only for the one request that fetches a CA to compare with a fingerprint.
    verify: bool = True


@dataclass(frozen=True)
class ServerTlsFiles:
    """A server's certificate and key, and the CA whose client certificates it accepts."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        return server_context(self.cert_file, self.key_file, client_ca_file=self.client_ca_file)


def server_context(
    cert_file: Path, key_file: Path, *, client_ca_file: Path | None = None
) -> ssl.SSLContext:
    """A server context presenting ``cert_file``; with ``client_ca_file``, client
    certificates signed by that CA are asked for and verified (not required).

    A renewed certificate (the file replaced, as the site agent does) is picked up without a
    restart: the handshake that notices the change reloads the chain, and every connection
    after it presents the new one (connections already open keep theirs).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
        if client_ca_file is not None:
            context.load_verify_locations(cafile=str(client_ca_file))
            context.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(f"cannot use the certificate {cert_file} / key {key_file}: {exc}") from (
            exc
        )
    context.set_alpn_protocols(["http/1.1"])
    context.sni_callback = _CertificateReloader(context, Path(cert_file), Path(key_file))
    return context


class _CertificateReloader:
    """Called by OpenSSL at every handshake (with or without SNI): one ``stat`` of the
    certificate file, and a reload of the chain into the context when it changed."""

    def __init__(self, context: ssl.SSLContext, cert_file: Path, key_file: Path) -> None:
        self.context = context
        self.cert_file = cert_file
        self.key_file = key_file
        self.loaded = self._stamp()

    def _stamp(self) -> tuple[int, int]:
        try:
            stat = self.cert_file.stat()
        except OSError:
            return (0, 0)
        return (stat.st_mtime_ns, stat.st_size)

    def __call__(self, _sock: Any, _server_name: str | None, _context: ssl.SSLContext) -> None:
        stamp = self._stamp()
        if stamp == self.loaded or stamp == (0, 0):
            return
        try:
            self.context.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ssl.SSLError):
            return  # half-replaced or mismatched: keep presenting the chain loaded before
        self.loaded = stamp


def client_context(
    ca_file: Path | None,
    *,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> ssl.SSLContext:
    """A client context trusting ``ca_file`` (the fleet CA; None: the system's roots), with
    a client certificate when this client has one (a site, a gateway)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if cert_file is not None:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(f"cannot use the client certificate {cert_file}: {exc}") from exc
    context.set_alpn_protocols(["http/1.1"])
    return context


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> x509.Certificate | None:
    """The verified certificate the other end presented, or None (none, or no TLS)."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(True)  # positional: httpcore hands out _ssl._SSLSocket
    if not der:
        return None
    return x509.load_der_x509_certificate(der)


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> Identity | None:
    """Who the other end's verified certificate names, or None."""
    cert = peer_certificate(ssl_object)
    return identity_of(cert) if cert is not None else None


def tls_extensions(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> dict[str, Any]:
    """The ASGI scope extensions for one TLS connection, computed once per connection:
    the standard ``tls`` extension (the client's certificate as PEM, the TLS version) and
    :data:`PEER_EXTENSION`, the :class:`Peer` that certificate names (None without one)."""
    if ssl_object is None:
        return {}
    cert = peer_certificate(ssl_object)
    chain = [cert.public_bytes(serialization.Encoding.PEM).decode()] if cert else []
    peer = Peer(identity_of(cert), format(cert.serial_number, "x")) if cert else None
    return {
        "tls": {"client_cert_chain": chain, "tls_version": ssl_object.version()},
        PEER_EXTENSION: peer,
    }
