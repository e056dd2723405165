"""Routing across sites: the site directory, site selection, the client SDK and the gateway.

See ``docs/routing.md``. Public names: :class:`Client`, :class:`AsyncClient`,
:class:`ResidencyRules` (local rules: they only narrow the fleet's residency policies, see
``docs/residency.md``), :class:`Site`, :class:`RoutingOptions`.
"""

from __future__ import annotations

from modelfleet.errors import DeadlineExceeded, NoSiteAvailable, SiteError
from modelfleet.routing.client import AsyncClient, Client, InferResult
from modelfleet.routing.directory import Site, SiteDirectory
from modelfleet.routing.residency import UNRESTRICTED, ResidencyRules
from modelfleet.routing.router import Router, RoutingOptions

__all__ = [
    "UNRESTRICTED",
    "AsyncClient",
    "Client",
    "DeadlineExceeded",
    "InferResult",
    "NoSiteAvailable",
    "ResidencyRules",
    "Router",
    "RoutingOptions",
    "Site",
    "SiteDirectory",
    "SiteError",
]
