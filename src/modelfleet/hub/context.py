"""Everything one hub process holds, built once at start-up and shared by the routers."""

from __future__ import annotations

from dataclasses import dataclass

from modelfleet.hub.datadir import DataDir
from modelfleet.hub.metrics import HubMetrics
from modelfleet.hub.registry import Registry
from modelfleet.hub.sites import Notifier, Sites
from modelfleet.hub.store import Store
from modelfleet.registry.artifacts import ArtifactStore
from modelfleet.settings import HubSettings


@dataclass
class HubContext:
    settings: HubSettings
    data_dir: DataDir
    store: Store
    artifacts: ArtifactStore
    registry: Registry
    metrics: HubMetrics
    sites: Sites
    notifier: Notifier

    def close(self) -> None:
        self.store.close()
