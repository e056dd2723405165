"""Wires one hub process: settings -> store, artifacts, key -> FastAPI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from modelfleet._version import __version__
from modelfleet.api import SigningKey
from modelfleet.hub.accuracy import AccuracyCollector
from modelfleet.hub.actions import Actions
from modelfleet.hub.anomalies import Anomalies
from modelfleet.hub.api import accuracy as accuracy_api
from modelfleet.hub.api import anomalies as anomalies_api
from modelfleet.hub.api import deployments as deployments_api
from modelfleet.hub.api import directory as directory_api
from modelfleet.hub.api import distributions as distributions_api
from modelfleet.hub.api import evaluations as evaluations_api
from modelfleet.hub.api import events as events_api
from modelfleet.hub.api import federation as federation_api
from modelfleet.hub.api import fleet as fleet_api
from modelfleet.hub.api import models as models_api
from modelfleet.hub.api import pipelines as pipelines_api
from modelfleet.hub.api import schedules as schedules_api
from modelfleet.hub.api import series as series_api
from modelfleet.hub.api import sites as sites_api
from modelfleet.hub.api import telemetry as telemetry_api
from modelfleet.hub.api import tokens as tokens_api
from modelfleet.hub.api.deps import Caller
from modelfleet.hub.api.errors import install_error_handlers
from modelfleet.hub.api.fastpath import SiteFastPath
from modelfleet.hub.api.limits import BodyLimit
from modelfleet.hub.api.openapi import HubApp
from modelfleet.hub.artifact_sweep import sweep_upload_leftovers
from modelfleet.hub.auth import Permission
from modelfleet.hub.certificates import SiteCertificates
from modelfleet.hub.context import HubContext
from modelfleet.hub.dashboard.app import install_dashboard
from modelfleet.hub.datadir import DataDir
from modelfleet.hub.drift_events import DriftWatch
from modelfleet.hub.evaluations import Evaluations
from modelfleet.hub.events import Events
from modelfleet.hub.federation.coordinator import Coordinator
from modelfleet.hub.metrics import HubMetrics, MeasureRequests
from modelfleet.hub.pipelines import PipelineLoop, Pipelines
from modelfleet.hub.ratelimit import FailureLimiter
from modelfleet.hub.registry import Registry
from modelfleet.hub.retention import TelemetryRetention
from modelfleet.hub.rollout.controller import build_rollouts
from modelfleet.hub.schedules import Automation, Schedules, hub_clock
from modelfleet.hub.sites import Sites
from modelfleet.hub.store import DbDeadlines, open_store
from modelfleet.hub.telemetry import Telemetry
from modelfleet.hub.telemetry_metrics import register as register_telemetry_metrics
from modelfleet.hub.timeseries import TimeSeries
from modelfleet.hub.tls import HubTls
from modelfleet.hub.triggers import Triggers
from modelfleet.hub.wakeups import Notifier
from modelfleet.hub.webhooks import Webhooks
from modelfleet.registry.artifacts import open_artifact_store
from modelfleet.settings import HubSettings


def db_deadlines(settings: HubSettings) -> DbDeadlines:
    """The bounds on the database connections the settings name (hub/store/sql/deadlines.py)."""
    return DbDeadlines(
        statement_s=settings.db_statement_deadline_s,
        idle_in_transaction_s=settings.db_idle_in_transaction_timeout_s,
        lease_s=settings.db_lease_timeout_s,
        lease_ping_s=settings.db_lease_ping_deadline_s,
    )


def build_context(settings: HubSettings) -> HubContext:
    """Open the backends named by the settings and the data directory."""
    data_dir = DataDir(settings.data_dir)
    data_dir.read_config()  # fails clearly when `hub init` was never run
    db_url, artifacts_url = data_dir.resolve_backends(settings.db, settings.artifacts)
    keys = data_dir.keys()
    store = open_store(db_url, db_deadlines(settings))
    artifacts = open_artifact_store(artifacts_url)
    registry = Registry(store, artifacts, keys)
    tls = data_dir.tls
    if not tls.exists():  # a data directory from before TLS: its CA is made on first start
        tls = HubTls.create(data_dir.root)
    tls.ensure_server_certificate()
    certificates = SiteCertificates(store, tls, timedelta(days=settings.site_certificate_days))
    sites = Sites(store, registry, settings, certificates)
    metrics = HubMetrics()
    telemetry = Telemetry(store, sites)
    anomalies = Anomalies(store.telemetry, interval_s=settings.anomaly_interval_s)
    register_telemetry_metrics(metrics.registry, telemetry, anomalies)
    metrics.registry.register(AccuracyCollector(telemetry.accuracy))
    notifier = Notifier()
    events = Events(store)
    registry.events = events  # model.registered
    anomalies.tell(events)  # anomaly.opened / anomaly.closed, from the anomaly loop's passes
    anomalies.also_each_pass(  # drift.flagged / drift.cleared, riding the same loop
        DriftWatch(events, telemetry, interval_s=settings.drift_check_interval_s).check
    )
    deployments, rollouts = build_rollouts(
        store,
        registry,
        sites,
        notifier.notify,
        settings,
        telemetry,
        anomalies=anomalies,
        events=events,
    )
    federation = Coordinator(store, registry, sites, tmp_dir=data_dir.tmp_dir / "fl", events=events)
    actions = Actions(federation, registry)
    clock = hub_clock(settings.test_clock_file)  # the system clock unless in test mode
    schedules = Schedules(store.schedules, events, actions, now=clock)
    triggers = Triggers(
        store.schedules,
        events,
        actions,
        registry,
        telemetry,
        anomalies,
        accuracy=telemetry.accuracy,
        now=clock,
    )
    evaluations = Evaluations(
        store, registry, sites, deployments, federation.consents, events=events
    )
    pipelines = Pipelines(store, registry, federation, evaluations, events)
    actions.pipelines = pipelines  # the `pipeline` action of schedules and triggers
    return HubContext(
        settings=settings,
        data_dir=data_dir,
        store=store,
        artifacts=artifacts,
        registry=registry,
        metrics=metrics,
        sites=sites,
        notifier=notifier,
        telemetry=telemetry,
        anomalies=anomalies,
        federation=federation,
        deployments=deployments,
        rollouts=rollouts,
        retention=TelemetryRetention(
            store.telemetry,
            store.audit,
            retention_days=settings.telemetry_retention_days,
            audit_retention_days=settings.audit_retention_days,
            interval_s=settings.telemetry_compact_interval_s,
            accuracy=store.accuracy,
        ),
        limiter=FailureLimiter(
            limit=settings.auth_failures_per_minute,
            audit_per_window=settings.audited_failures_per_minute,
        ),
        timeseries=TimeSeries(store.telemetry, retention_days=settings.telemetry_retention_days),
        events=events,
        webhooks=Webhooks(store, events, sites),
        evaluations=evaluations,
        schedules=schedules,
        triggers=triggers,
        automation=Automation(store, schedules, triggers, interval_s=settings.schedule_interval_s),
        pipelines=pipelines,
        pipeline_loop=PipelineLoop(store, pipelines, interval_s=settings.schedule_interval_s),
    )


def answer_long_polls(ctx: HubContext) -> None:
    """The hub is stopping: answer every held long-poll now (desired state "unchanged",
    federated tasks "none") and each later one at once, so the server's drain finds no
    request to wait for (:class:`~modelfleet.transport.graceful.GracefulServer` calls this
    before it drains; the lifespan shutdown comes only after the drain). A site takes the
    answer, finds the hub gone on its next poll and keeps serving from its cache."""
    ctx.notifier.close()
    ctx.federation.bell.close()
    ctx.events.bell.close()  # event streams (SSE) end
    ctx.evaluations.bell.close()


def create_app(ctx: HubContext) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Before serving: what a hub killed mid-upload left (an unreferenced blob, a
        # temporary, a spooled body), older than the upload grace (hub/artifact_sweep.py).
        sweep_upload_leftovers(
            ctx.store,
            ctx.artifacts,
            ctx.data_dir.tmp_dir,
            grace_s=ctx.settings.upload_grace_s,
        )
        # The coordinator loop resumes persisted jobs; on PostgreSQL only the replica
        # holding its advisory lock runs it (see hub/store/sql/leadership.py).
        ctx.federation.start()
        # The rollout controller resumes persisted rollouts; on PostgreSQL only the replica
        # holding its advisory lock moves them (same lock, another role).
        ctx.rollouts.start()
        ctx.retention.start()
        # Webhook delivery and the site online/offline watch: the leader only, too.
        ctx.webhooks.start()
        ctx.anomalies.start()  # judges new windows off the request path
        ctx.evaluations.start_loop()  # evaluation deadlines: the leader only
        ctx.automation.start()  # schedules and triggers: the lease holder only
        ctx.pipeline_loop.start()  # pipeline runs: the lease holder only
        yield
        ctx.pipeline_loop.stop()
        ctx.automation.stop()
        ctx.evaluations.stop_loop()
        ctx.anomalies.stop()
        ctx.webhooks.stop()
        ctx.retention.stop()
        ctx.rollouts.stop()
        ctx.federation.stop()
        ctx.close()

    app = HubApp(
        title="modelfleet hub",
        version=__version__,
        description="Control plane of a modelfleet: registry, sites, deployments, telemetry.",
        lifespan=lifespan,
    )
    app.state.hub = ctx
    install_error_handlers(app)
    app.include_router(models_api.router)
    app.include_router(accuracy_api.router)
    app.include_router(tokens_api.router)
    app.include_router(sites_api.router)
    app.include_router(deployments_api.router)
    app.include_router(telemetry_api.router)
    app.include_router(distributions_api.router)
    app.include_router(anomalies_api.router)
    app.include_router(series_api.router)  # /api/v1/telemetry/series (hub/timeseries.py)
    app.include_router(directory_api.router)
    app.include_router(federation_api.router)
    app.include_router(fleet_api.router)
    app.include_router(events_api.router)
    app.include_router(evaluations_api.router)
    app.include_router(schedules_api.router)  # /api/v1/schedules, /api/v1/triggers
    app.include_router(pipelines_api.router)  # /api/v1/pipelines (hub/pipelines.py)
    install_dashboard(app)  # /ui: the web dashboard (hub/dashboard)

    app.add_middleware(BodyLimit, max_body_bytes=ctx.settings.max_body_bytes)
    app.add_middleware(MeasureRequests, metrics=ctx.metrics)
    app.add_middleware(SiteFastPath, ctx=ctx)  # outermost: skips every layer above

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["ops"], summary="Readiness: the hub reaches its database")
    def readyz() -> dict[str, str]:
        # Liveness says the process answers; readiness that it can do work: while the
        # database is down every API call would be a 503 store_unavailable, and so is this.
        ctx.store.ping()
        return {"status": "ready", "version": __version__}

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics (a token with sites:read: viewer and up)",
        response_class=Response,
    )
    def metrics(caller: Caller) -> Response:
        # Per-site figures: the same audience as /api/v1/telemetry/status.
        caller.require(Permission.SITES_READ)
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/api/v1/keys/signing",
        response_model=SigningKey,
        tags=["registry"],
        summary="The hub's Ed25519 public key that signs manifests (sites pin it)",
    )
    def signing_key() -> SigningKey:
        return SigningKey(public_key=ctx.registry.public_key, key_id=ctx.registry.key_id)

    return app
