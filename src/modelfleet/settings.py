"""Process settings, read from flags, the environment and the hub's data directory.

Each process has its own settings class with its own env prefix (``MODELFLEET_HUB_*`` for
the hub), so one shell can configure several processes without clashes. The client side
reads the two public variables ``MODELFLEET_HUB_URL`` and ``MODELFLEET_TOKEN``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HUB_URL = "https://127.0.0.1:8700"
DEFAULT_HUB_PORT = 8700
DEFAULT_SITE_PORT = 8800
DEFAULT_GATEWAY_PORT = 8900


def default_data_dir() -> Path:
    """Where ``hub init`` puts state when ``--data-dir`` is not given."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "modelfleet" / "hub"


class HubSettings(BaseSettings):
    """Settings of one hub process (env prefix ``MODELFLEET_HUB_``)."""

    model_config = SettingsConfigDict(env_prefix="MODELFLEET_HUB_", extra="ignore")

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Holds the signing key, the config written by `hub init`, and by default "
        "the SQLite database and the artifact directory.",
    )
    db: str | None = Field(
        default=None,
        description="State database URL (sqlite:///... or postgresql://...). Defaults to the "
        "value recorded by `hub init`, else SQLite in the data directory.",
    )
    artifacts: str | None = Field(
        default=None,
        description="Artifact store URL (a directory, or an fsspec URL such as s3://bucket/p). "
        "Defaults to the value recorded by `hub init`, else <data-dir>/artifacts.",
    )
    host: str = Field(default="127.0.0.1", description="Interface the HTTP API binds to.")
    port: int = Field(default=DEFAULT_HUB_PORT, description="TCP port of the HTTP API.")
    max_artifact_bytes: int = Field(
        default=2 * 1024**3,
        description="Largest ONNX upload accepted; bigger uploads are refused with 413 while "
        "streaming, before they fill the disk.",
    )
    max_body_bytes: int = Field(
        default=128 * 1024**2,
        description="Largest request body other than a model upload (JSON documents, "
        "telemetry batches, federated updates); bigger ones get 413.",
    )
    enrollment_ttl_s: float = Field(
        default=24 * 3600,
        gt=0,
        le=30 * 24 * 3600,
        description="How long a one-time site enrollment token stays valid (at most 30 days).",
    )
    site_certificate_days: float = Field(
        default=7.0,
        gt=0,
        le=397,
        description="Lifetime of the certificate a site gets at enrollment and each renewal; "
        "agents renew when two thirds of it has passed, so a site may be cut off from the hub "
        "for about a third of it and still renew over mTLS (after that, with its token).",
    )
    offline_after_s: float = Field(
        default=30.0,
        description="A site that has not reported for this long is shown offline; agents "
        "report every few seconds, so a few missed reports mark a site down.",
    )
    long_poll_max_s: float = Field(
        default=30.0,
        description="Longest a desired-state long-poll is held open before answering 304.",
    )
    rollout_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="How often the rollout controller evaluates running rollouts, and how "
        "often a follower hub tries to take over the controller on PostgreSQL (so a dead "
        "leader is replaced within about this long).",
    )
    rollout_baseline_window_s: float = Field(
        default=600.0,
        gt=0,
        description="For relative p99 gates: how far before a step started the previous "
        "version's latency is read at the same sites.",
    )
    telemetry_retention_days: float = Field(
        default=30.0,
        gt=0,
        description="Telemetry windows older than this are folded into per-site totals and "
        "deleted (status totals stay exact; drift, gates and recent figures read only recent "
        "windows), so the hub's database does not grow without bound.",
    )
    telemetry_compact_interval_s: float = Field(
        default=3600.0,
        gt=0,
        description="How often the hub folds and deletes telemetry windows past retention.",
    )


class SiteSettings(BaseSettings):
    """Settings of one site agent (env prefix ``MODELFLEET_SITE_``)."""

    model_config = SettingsConfigDict(env_prefix="MODELFLEET_SITE_", extra="ignore")

    state_dir: Path = Field(
        default=Path("./site-state"),
        description="Credentials, the last desired state and the model cache; everything the "
        "agent needs to restart and serve without the hub.",
    )
    host: str = Field(default="127.0.0.1", description="Interface the inference server binds.")
    port: int = Field(default=DEFAULT_SITE_PORT, description="Inference server port.")
    public_url: str | None = Field(
        default=None,
        description="URL clients use to reach this site (reported to the hub for routing); "
        "defaults to http://HOST:PORT.",
    )
    report_interval_s: float = Field(
        default=5.0, description="Heartbeat: how often the agent reports its state to the hub."
    )
    long_poll_s: float = Field(
        default=30.0, description="How long each desired-state request waits for a change."
    )
    retry_max_s: float = Field(
        default=60.0,
        description="Cap of the exponential back-off (with jitter) between attempts to "
        "activate a model that failed, and between attempts to reach the hub.",
    )
    intra_op_threads: int = Field(
        default=1,
        description="onnxruntime threads per session; 1 suits many small concurrent requests.",
    )
    cascade_file: Path | None = Field(
        default=None,
        description="Hybrid cloud-edge cascade (YAML): the cloud target, the deadline and per-"
        "model escalation rules (docs/routing.md). Without it every answer is local.",
    )
    config_file: Path | None = Field(
        default=None,
        description="The site's own YAML config: local data sets, whether and for which models "
        "it takes part in federated learning, its limits and custom trainers "
        "(docs/federated.md). Without it the site never trains.",
    )
    fl_poll_s: float = Field(
        default=20.0,
        gt=0,
        description="How long each federated task request waits for a task (long-poll).",
    )
    telemetry_enabled: bool = Field(
        default=True,
        description="Record telemetry windows (counts, latency, sketches) and ship them to the "
        "hub. Off only to measure the cost of telemetry; raw rows are never sent either way.",
    )
    telemetry_window_s: float = Field(
        default=10.0,
        gt=0,
        description="Length of one telemetry window (seconds, aligned to wall-clock multiples "
        "so windows of different sites line up at the hub).",
    )
    telemetry_sample_requests: int = Field(
        default=256,
        ge=0,
        description="Requests per model and window whose input/output rows feed the drift "
        "sketches (uniform reservoir sample); counts and latency always cover every request.",
    )
    spool_max_bytes: int = Field(
        default=64 * 1024**2,
        gt=0,
        description="Cap of the on-disk telemetry outbox; when full, the oldest windows are "
        "dropped and the drop is counted and reported to the hub.",
    )
    telemetry_ship_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often the shipper sends closed windows to the hub (back-off after "
        "failures up to retry_max_s).",
    )
    policy_file: Path | None = Field(
        default=None,
        description="The site's own governance file (YAML: jurisdiction and accepted training "
        "regions, docs/deployments.md). The agent re-reads it before every activation and "
        "refuses a model trained on data from a region it does not accept.",
    )


class ClientSettings(BaseSettings):
    """What every client (CLI, SDK) reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="MODELFLEET_", extra="ignore")

    hub_url: str = Field(default=DEFAULT_HUB_URL, description="Base URL of the hub.")
    token: str | None = Field(default=None, description="Bearer token for the hub API.")
    ca_file: Path | None = Field(
        default=None,
        description="The fleet CA (the hub data directory's tls/ca.pem) to verify an https "
        "hub and sites against; unset: the system's trusted roots.",
    )
