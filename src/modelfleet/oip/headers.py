"""HTTP header names on Open Inference Protocol requests: the protocol's own and modelfleet's.

Sites, the gateway, the SDK and the cascade all read or write these; they live here, with
the protocol, so that none of them imports another just for a string.
"""

from __future__ import annotations

__all__ = [
    "ATTEMPT_HEADER",
    "CASCADE_HEADER",
    "HEDGE_HEADER",
    "INFERENCE_HEADER_LENGTH",
    "REGION_HEADER",
    "REQUEST_ID_HEADER",
    "SITE_HEADER",
]

#: The binary tensor extension: length of the JSON header before the raw tensor bytes.
INFERENCE_HEADER_LENGTH = "inference-header-content-length"
#: The same for every attempt of one request (retries, hedges), so logs can join them.
REQUEST_ID_HEADER = "x-request-id"
#: 1, 2, ... per attempt the router makes for one request.
ATTEMPT_HEADER = "x-modelfleet-attempt"
#: ``1`` on a hedged (speculative second) attempt.
HEDGE_HEADER = "x-modelfleet-hedge"
#: The request's data region, matched against site jurisdictions (residency).
REGION_HEADER = "x-modelfleet-data-region"
#: On a gateway's answer: the site that served it.
SITE_HEADER = "x-modelfleet-site"
#: ``1`` on a request a site's cascade forwarded, so the receiver does not bounce it again.
CASCADE_HEADER = "x-modelfleet-cascade"
