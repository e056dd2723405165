"""modelfleet: deploy, serve, monitor and improve ML models across many sites.

The public SDK is imported lazily so ``modelfleet --help`` stays fast:
``modelfleet.HubClient`` and ``modelfleet.export.from_sklearn`` / ``from_torch``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["HubClient", "__version__"]

if TYPE_CHECKING:
    from modelfleet.hub_client import HubClient


def __getattr__(name: str) -> Any:
    if name == "HubClient":
        from modelfleet.hub_client import HubClient

        return HubClient
    raise AttributeError(f"module 'modelfleet' has no attribute {name!r}")
