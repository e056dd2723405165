"""modelfleet: deploy, serve, monitor and improve ML models across many sites.

The public SDK is imported lazily so ``modelfleet --help`` stays fast:
``modelfleet.HubClient``, ``modelfleet.Client`` / ``modelfleet.AsyncClient`` (inference routed
to the best permitted site) and ``modelfleet.export.from_sklearn`` / ``from_torch``.

The errors users catch are exported here too (``modelfleet.NotFound``,
``modelfleet.HubUnreachable``, ``modelfleet.NoSiteAvailable``...); ``errors`` imports only the
standard library, so importing them eagerly costs nothing. The whole hierarchy, and its wire
codes, is drawn in :mod:`modelfleet.errors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelfleet._version import __version__
from modelfleet.errors import (
    Conflict,
    DeadlineExceeded,
    HubError,
    HubResponseError,
    HubUnreachable,
    InvalidInput,
    ModelfleetError,
    NoSiteAvailable,
    NotFound,
    Overloaded,
    PermissionDenied,
    RateLimited,
    SiteError,
    TlsError,
    Unauthenticated,
    VerificationError,
)

__all__ = [
    "AsyncClient",
    "Client",
    "Conflict",
    "DeadlineExceeded",
    "HubClient",
    "HubError",
    "HubResponseError",
    "HubUnreachable",
    "InvalidInput",
    "ModelfleetError",
    "NoSiteAvailable",
    "NotFound",
    "Overloaded",
    "PermissionDenied",
    "RateLimited",
    "SiteError",
    "TlsError",
    "Unauthenticated",
    "VerificationError",
    "__version__",
]

if TYPE_CHECKING:
    from modelfleet.hub_client import HubClient
    from modelfleet.routing.client import AsyncClient, Client


def __getattr__(name: str) -> Any:
    if name == "HubClient":
        from modelfleet.hub_client import HubClient

        return HubClient
    if name in ("Client", "AsyncClient"):
        from modelfleet.routing import client

        return getattr(client, name)
    raise AttributeError(f"module 'modelfleet' has no attribute {name!r}")
