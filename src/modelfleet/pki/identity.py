"""Who a certificate names, in one place.

Every fleet certificate carries its holder's identity as a URI subject alternative name:
``modelfleet://site/<name>``, ``modelfleet://hub`` or ``modelfleet://gateway/<name>``. A
client that chose site ``plant-eu-west`` checks, after the TLS handshake, that the peer's
certificate names exactly that site: a URL that now leads to another site's port (a site
that crashed after registering, a port reused) is refused, whatever host name the URL has.
The URI form is exact (site names are case-sensitive and may hold ``_``, which DNS names may
not), and no DNS resolver or public CA ever treats it as a host name.

Host names (DNS names and IP addresses) are SANs too, so standard clients (``curl
--cacert``, Triton's client) that check the URL's host against the certificate work as well.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from modelfleet.errors import InvalidInput
from modelfleet.refs import check_name

__all__ = [
    "MAX_HOSTS",
    "Identity",
    "fingerprint",
    "gateway_identity",
    "host_names",
    "hub_identity",
    "identity_of",
    "site_identity",
]

_SCHEME = "modelfleet://"
#: Host SANs one certificate may carry (a site's addresses, not a wildcard zoo).
MAX_HOSTS = 32
#: A DNS name as a SAN: labels of letters, digits and hyphens, no wildcard.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")

Kind = Literal["site", "hub", "gateway"]


@dataclass(frozen=True)
class Identity:
    """The holder of a fleet certificate: a site, the hub or a gateway, by name."""

    kind: Kind
    name: str

    @property
    def uri(self) -> str:
        return f"{_SCHEME}hub" if self.kind == "hub" else f"{_SCHEME}{self.kind}/{self.name}"

    def __str__(self) -> str:
        return "the hub" if self.kind == "hub" else f"{self.kind} {self.name}"


def site_identity(name: str) -> Identity:
    return Identity("site", check_name(name, "site name"))


def gateway_identity(name: str) -> Identity:
    return Identity("gateway", check_name(name, "gateway name"))


def hub_identity() -> Identity:
    return Identity("hub", "hub")


def parse_identity(uri: str) -> Identity | None:
    """The identity a ``modelfleet://`` URI names, or None for any other URI."""
    if uri == f"{_SCHEME}hub":
        return hub_identity()
    named: tuple[Kind, ...] = ("site", "gateway")
    for kind in named:
        prefix = f"{_SCHEME}{kind}/"
        if uri.startswith(prefix):
            try:
                return Identity(kind, check_name(uri.removeprefix(prefix)))
            except InvalidInput:
                return None
    return None


def identity_of(cert: x509.Certificate) -> Identity | None:
    """The one identity ``cert`` names; None if it names none (or, suspiciously, several)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    found = {
        identity
        for uri in sans.get_values_for_type(x509.UniformResourceIdentifier)
        if (identity := parse_identity(uri)) is not None
    }
    return found.pop() if len(found) == 1 else None


def fingerprint(cert: x509.Certificate) -> str:
    """``sha256:<hex>`` of the certificate's DER bytes, as enrollment tokens carry it."""
    der = cert.public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def host_names(hosts: list[str] | tuple[str, ...]) -> list[x509.GeneralName]:
    """Host names and IP addresses as SANs; :class:`InvalidInput` names the first bad one."""
    if len(hosts) > MAX_HOSTS:
        raise InvalidInput(f"at most {MAX_HOSTS} host names per certificate, got {len(hosts)}")
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in hosts:
        text = host.strip().lower().rstrip(".")
        if text in seen:
            continue
        seen.add(text)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(text.strip("[]"))))
            continue
        except ValueError:
            pass
        if not _DNS.fullmatch(text):
            raise InvalidInput(
                f"invalid host name {host!r} for a certificate: use a DNS name (letters, "
                "digits, '-', '.'; no wildcards) or an IP address"
            )
        names.append(x509.DNSName(text))
    return names
