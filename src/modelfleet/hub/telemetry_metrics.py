"""Fleet-wide telemetry as Prometheus gauges on the hub's ``/metrics``.

A collector rather than long-lived gauges: every scrape reads the current status (whose
drift verdicts are cached for a few seconds), so the figures agree with
``modelfleet status`` and a removed site's series disappear instead of going stale.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from modelfleet.hub.anomalies import Anomalies
from modelfleet.hub.telemetry import PERCENTILES, Telemetry

log = logging.getLogger("modelfleet.hub")

_MODEL = ["site", "model", "version"]


class TelemetryCollector(Collector):
    def __init__(self, telemetry: Telemetry, anomalies: Anomalies | None = None) -> None:
        self.telemetry = telemetry
        self.anomalies = anomalies

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            status = self.telemetry.status()
        except Exception:  # a scrape must not fail because the store hiccups
            log.exception("telemetry status for /metrics failed")
            return
        online = GaugeMetricFamily(
            "modelfleet_site_online", "1 if the site reports", labels=["site"]
        )
        dropped_w = GaugeMetricFamily(
            "modelfleet_site_telemetry_dropped_windows",
            "Telemetry windows the site's full outbox dropped (cumulative)",
            labels=["site"],
        )
        dropped_r = GaugeMetricFamily(
            "modelfleet_site_telemetry_dropped_requests",
            "Requests inside the dropped telemetry windows (cumulative)",
            labels=["site"],
        )
        total = GaugeMetricFamily(
            "modelfleet_site_requests", "Requests counted from telemetry (all time)", labels=_MODEL
        )
        errors = GaugeMetricFamily(
            "modelfleet_site_errors", "Failed requests counted from telemetry", labels=_MODEL
        )
        rate = GaugeMetricFamily(
            "modelfleet_site_requests_per_second", "Recent request rate", labels=_MODEL
        )
        error_rate = GaugeMetricFamily(
            "modelfleet_site_error_rate", "Recent share of failed requests", labels=_MODEL
        )
        latency = GaugeMetricFamily(
            "modelfleet_site_latency_seconds",
            "Recent latency percentile from merged histograms",
            labels=[*_MODEL, "quantile"],
        )
        drifted = GaugeMetricFamily(
            "modelfleet_site_drifted_features",
            "Features flagged as drifted (-1: no reference or not enough data)",
            labels=_MODEL,
        )
        for site in status["sites"]:
            name = site["site"]
            online.add_metric([name], 1.0 if site["online"] else 0.0)
            dropped_w.add_metric([name], site["dropped"]["windows"])
            dropped_r.add_metric([name], site["dropped"]["requests"])
            for m in site["models"]:
                labels = [name, m["model"], str(m["version"])]
                total.add_metric(labels, m["requests_total"])
                errors.add_metric(labels, m["errors_total"])
                rate.add_metric(labels, m["requests_per_s"])
                if m["error_rate"] is not None:
                    error_rate.add_metric(labels, m["error_rate"])
                for key, q in PERCENTILES:
                    if m[f"{key}_s"] is not None:
                        latency.add_metric([*labels, str(q)], m[f"{key}_s"])
                drifted.add_metric(labels, -1 if m["drift"] is None else len(m["drifted"]))
        yield from (online, dropped_w, dropped_r, total, errors, rate, error_rate, latency, drifted)
        if self.anomalies is not None:
            yield from self._anomalies(self.anomalies)

    @staticmethod
    def _anomalies(service: Anomalies) -> Iterator[GaugeMetricFamily]:
        try:
            found = service.find(open_only=True)
        except Exception:  # as above: the scrape goes on without these series
            log.exception("anomalies for /metrics failed")
            return
        gauge = GaugeMetricFamily(
            "modelfleet_anomalies_open",
            "Open anomalies per site, model, metric and severity (hub/anomalies.py)",
            labels=["site", "model", "metric", "severity"],
        )
        counts: dict[tuple[str, ...], int] = {}
        for a in found:
            key: tuple[str, ...] = (a.site, a.model, a.metric, a.severity)
            counts[key] = counts.get(key, 0) + 1
        for key, count in sorted(counts.items()):
            gauge.add_metric(list(key), count)
        yield gauge


def register(
    registry: CollectorRegistry, telemetry: Telemetry, anomalies: Anomalies | None = None
) -> TelemetryCollector:
    collector = TelemetryCollector(telemetry, anomalies)
    registry.register(collector)
    return collector
