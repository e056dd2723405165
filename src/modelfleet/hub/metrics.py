"""Prometheus metrics of the hub, in a registry per app so tests can run many hubs."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class HubMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "modelfleet_hub_requests_total",
            "HTTP requests answered by the hub API",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelfleet_hub_request_seconds",
            "Time to answer a hub API request",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30),
        )
        self.pushes = Counter(
            "modelfleet_hub_model_pushes_total",
            "Model pushes by outcome",
            ["outcome"],
            registry=self.registry,
        )
