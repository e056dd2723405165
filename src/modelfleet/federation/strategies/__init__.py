"""Aggregation strategies, one module per algorithm behind :class:`Strategy`.

``make_strategy("fedavg")`` builds one by name; :data:`STRATEGIES` lists them all.
"""

from __future__ import annotations

from typing import Any

from modelfleet.errors import InvalidInput
from modelfleet.federation.strategies.base import Aggregator, State, Strategy, Update
from modelfleet.federation.strategies.fedavg import FedAvg
from modelfleet.federation.strategies.fedopt import FedAdam, FedYogi
from modelfleet.federation.strategies.fedprox import FedProx
from modelfleet.federation.strategies.krum import Krum, MultiKrum
from modelfleet.federation.strategies.median import Median
from modelfleet.federation.strategies.trimmed_mean import TrimmedMean

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (FedAvg, FedProx, FedAdam, FedYogi, Median, TrimmedMean, Krum, MultiKrum)
}

__all__ = ["STRATEGIES", "Aggregator", "State", "Strategy", "Update", "make_strategy"]


def make_strategy(name: str, params: dict[str, Any] | None = None) -> Strategy:
    """The strategy called ``name`` with ``params``; ``InvalidInput`` names the choices."""
    cls = STRATEGIES.get(name.lower().replace("-", "_"))
    if cls is None:
        raise InvalidInput(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return cls(**dict(params or {}))
