"""Everything one hub process holds, built once at start-up and shared by the routers."""

from __future__ import annotations

from dataclasses import dataclass

from modelfleet.hub.anomalies import Anomalies
from modelfleet.hub.datadir import DataDir
from modelfleet.hub.deployments import Deployments
from modelfleet.hub.evaluations import Evaluations
from modelfleet.hub.events import Events
from modelfleet.hub.federation.coordinator import Coordinator
from modelfleet.hub.metrics import HubMetrics
from modelfleet.hub.pipelines import PipelineLoop, Pipelines
from modelfleet.hub.ratelimit import FailureLimiter
from modelfleet.hub.registry import Registry
from modelfleet.hub.retention import TelemetryRetention
from modelfleet.hub.rollout.controller import RolloutController
from modelfleet.hub.schedules import Automation, Schedules
from modelfleet.hub.sites import Sites
from modelfleet.hub.store import Store
from modelfleet.hub.telemetry import Telemetry
from modelfleet.hub.timeseries import TimeSeries
from modelfleet.hub.triggers import Triggers
from modelfleet.hub.wakeups import Notifier
from modelfleet.hub.webhooks import Webhooks
from modelfleet.registry.artifacts import ArtifactStore
from modelfleet.settings import HubSettings


@dataclass
class HubContext:
    """Every service of one hub, each built once by :func:`~modelfleet.hub.app.build_context`
    on the one :class:`Store`; none is optional, so routers never check for one."""

    settings: HubSettings
    data_dir: DataDir
    store: Store
    artifacts: ArtifactStore
    registry: Registry
    metrics: HubMetrics
    sites: Sites
    notifier: Notifier
    telemetry: Telemetry
    #: Anomalies in the telemetry windows (hub/anomalies.py).
    anomalies: Anomalies
    #: The federated-learning coordinator (hub/federation/).
    federation: Coordinator
    #: Deployments and the rollout controller (hub/deployments.py, hub/rollout/).
    deployments: Deployments
    rollouts: RolloutController
    #: Folds telemetry windows past retention into totals (hub/retention.py).
    retention: TelemetryRetention
    #: Failed authentications per client address (hub/ratelimit.py).
    limiter: FailureLimiter
    #: Telemetry windows over time, per site x model (hub/timeseries.py): charts.
    timeseries: TimeSeries
    #: The event log (hub/events.py) and webhook delivery (hub/webhooks.py).
    events: Events
    webhooks: Webhooks
    #: Versions compared on the sites' labelled data (hub/evaluations.py).
    evaluations: Evaluations
    #: Schedules and triggers (hub/schedules.py, hub/triggers.py) and their loop.
    schedules: Schedules
    triggers: Triggers
    automation: Automation
    #: Pipelines (train -> evaluate -> promote, hub/pipelines.py) and their loop.
    pipelines: Pipelines
    pipeline_loop: PipelineLoop

    def close(self) -> None:
        self.store.close()
