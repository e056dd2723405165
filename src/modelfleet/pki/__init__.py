"""The fleet's public-key infrastructure: one CA per fleet, identities in certificates.

- :mod:`.files`: private key files, created 0600 from the first byte and never overwritten.
- :mod:`.identity`: who a certificate names (``modelfleet://site/<name>``, the hub, a
  gateway), fingerprints, and host names as subject alternative names.
- :mod:`.ca`: the fleet CA (``hub init`` creates it), the certificates it issues from CSRs,
  and the checks a CSR must pass first.
- :mod:`.certdir`: a certificate directory (``cert.pem``, ``key.pem``, ``ca.pem``), what
  ``hub cert issue`` writes for a gateway and ``gateway serve --tls-dir`` reads.

Pure cryptography on ``cryptography``'s x509: no network, no store. The hub issues, sites and
clients verify; both sides import this package, and it imports nothing above ``errors``.
"""

from modelfleet.pki.ca import FleetCA, IssuedCertificate
from modelfleet.pki.identity import (
    Identity,
    fingerprint,
    gateway_identity,
    hub_identity,
    identity_of,
    site_identity,
)
from modelfleet.pki.keys import generate_key, load_private_key, make_csr

__all__ = [
    "FleetCA",
    "Identity",
    "IssuedCertificate",
    "fingerprint",
    "gateway_identity",
    "generate_key",
    "hub_identity",
    "identity_of",
    "load_private_key",
    "make_csr",
    "site_identity",
]
