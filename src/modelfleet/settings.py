"""Process settings, read from flags, the environment and the hub's data directory.

Each process has its own settings class with its own env prefix (``MODELFLEET_HUB_*`` for
the hub), so one shell can configure several processes without clashes. The client side
reads the two public variables ``MODELFLEET_HUB_URL`` and ``MODELFLEET_TOKEN``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelfleet.errors import InvalidInput

DEFAULT_HUB_URL = "https://127.0.0.1:8700"
DEFAULT_HUB_PORT = 8700
DEFAULT_SITE_PORT = 8800
DEFAULT_GATEWAY_PORT = 8900


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
DAY_S = 86400.0


def parse_duration(text: str | float, what: str = "duration") -> float:
    """Seconds from ``90s``, ``30m``, ``12h``, ``30d``, ``2w`` or a bare number of seconds.

    One spelling for every lifetime a human types (token and enrollment TTLs), so
    ``--ttl 30d`` means the same on every command; anything else is refused by name."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.fullmatch(str(text).strip().lower())
        if match is None:
            raise InvalidInput(
                f"{what} {text!r} is not a duration: use a number and a unit, "
                "s, m, h, d or w (e.g. 90m, 12h, 30d)"
            )
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInput(f"{what} must be longer than zero, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling :func:`parse_duration` reads back (``30d``, ``12h``)."""
    for unit in ("d", "h", "m"):
        if seconds >= _UNIT_S[unit] and seconds % _UNIT_S[unit] == 0:
            return f"{int(seconds // _UNIT_S[unit])}{unit}"
    return f"{seconds:g}s"


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
    upload_grace_s: float = Field(
        default=3600.0,
        ge=0,
        le=30 * DAY_S,
        description="How old an unreferenced artifact blob, artifact-store temporary or "
        "upload spool file must be before the start-up sweep removes it (what a hub killed "
        "mid-upload leaves). Longer than any upload in flight on another replica sharing the "
        "store, so the sweep never takes a blob whose version row is about to commit; 0 "
        "removes every leftover at once (one hub, nothing in flight while it starts).",
    )
    max_body_bytes: int = Field(
        default=128 * 1024**2,
        description="Largest request body other than a model upload (JSON documents, "
        "telemetry batches, federated updates); bigger ones get 413.",
    )
    enrollment_ttl_s: float = Field(
        default=24 * 3600,
        gt=0,
        le=30 * DAY_S,
        description="How long a one-time site enrollment token stays valid when `site add` "
        "(or a re-issue) names no TTL; at most enrollment_max_ttl_s.",
    )
    enrollment_max_ttl_s: float = Field(
        default=7 * DAY_S,
        gt=0,
        le=30 * DAY_S,
        description="Longest enrollment TTL a caller may ask for (at most 30 days): an "
        "enrollment token is a bearer secret that makes whoever holds it the site, so one "
        "left in a ticket or a chat log must stop working soon; longer asks get 400.",
    )
    admin_token_ttl_s: float = Field(
        default=30 * DAY_S,
        gt=0,
        description="Lifetime of an admin token created without a TTL, including the one "
        "`hub init` prints and the one `hub token recover` mints: admin tokens can do "
        "everything, so a forgotten one must not stay valid for good. Renew by creating "
        "another before it expires; if every admin token expired, `hub token recover`.",
    )
    token_ttl_s: float = Field(
        default=90 * DAY_S,
        gt=0,
        description="Lifetime of a non-admin token (operator, viewer, infer) created without "
        "a TTL: long enough for a CI job or an application, short enough that a leaked one "
        "dies by itself.",
    )
    token_max_ttl_s: float = Field(
        default=365 * DAY_S,
        gt=0,
        description="Longest TTL any created token may have (every role): no token lives "
        "for ever, so a leaked one has a bound even when nobody revokes it; longer asks "
        "get 400. Site credentials from enrollment are bound to the site instead (revoked "
        "with `site remove`).",
    )
    desired_state_ttl_s: float = Field(
        default=DAY_S,
        ge=60,
        le=30 * DAY_S,
        description="How long a signed desired state stays valid for a site that has not "
        "applied it yet: a document held back on the path and delivered later than this is "
        "refused. Each long-poll answer is signed afresh, so a connected site never sees "
        "one near expiry; the state a site already applied stays valid however old.",
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
    auth_failures_per_minute: int = Field(
        default=60,
        ge=1,
        le=100_000,
        description="Failed authentications (unknown or expired token, refused enrollment) "
        "one client address may make per minute; beyond, it is answered 429 before any "
        "lookup until the minute is over. Known tokens are never limited.",
    )
    audited_failures_per_minute: int = Field(
        default=10,
        ge=0,
        le=100_000,
        description="Of those failures, how many per address and minute are written to the "
        "audit log (the rest are counted in the hub's metrics), so anonymous traffic cannot "
        "grow the log without bound.",
    )
    ui_session_hours: float = Field(
        default=8.0,
        gt=0,
        le=24 * 30,
        description="How long a dashboard sign-in lasts: the session cookie expires then (or "
        "sooner, when the token it was exchanged for expires or is revoked).",
    )
    audit_retention_days: float = Field(
        default=365.0,
        gt=0,
        le=36_500,
        description="Audit entries older than this are deleted by the retention loop.",
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
    anomaly_interval_s: float = Field(
        default=10.0,
        ge=1.0,
        le=600.0,
        description="How often the hub's anomaly loop reads the windows stored since its last "
        "pass and judges the buckets that settled (hub/anomalies.py); listings, /metrics and "
        "the rollout gate answer from the last pass.",
    )
    drift_check_interval_s: float = Field(
        default=60.0,
        ge=1.0,
        le=3600.0,
        description="How often the hub judges every site x model version's drift to tell "
        "drift.flagged / drift.cleared events (hub/drift_events.py; run by the anomaly "
        "loop, so never more often than anomaly_interval_s).",
    )
    schedule_interval_s: float = Field(
        default=5.0,
        ge=0.1,
        le=60.0,
        description="How often the hub's schedule loop judges due cron slots and looks at "
        "triggers (hub/schedules.py); a slot fires within about this long of its time. On "
        "PostgreSQL only the replica holding the schedules lease runs it.",
    )
    db_statement_deadline_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="PostgreSQL: longest the hub waits for any one answer of the database "
        "(a statement, a commit, a connection's pre-ping) before it cuts the connection; "
        "the call then fails with 503 store_unavailable instead of hanging in a network "
        "partition. The server's statement_timeout is set to 80% of it, so a merely slow "
        "statement is cancelled by the server first. Migrations are not bounded.",
    )
    db_idle_in_transaction_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=86400,
        description="PostgreSQL: a hub session idle inside a transaction this long is ended "
        "by the server (idle_in_transaction_session_timeout), so a replica cut off "
        "mid-transaction does not hold its row locks until the kernel notices.",
    )
    db_lease_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="PostgreSQL: the server ends a leader's lease session silent this long "
        "(idle_session_timeout, PostgreSQL 14+), freeing its lock for another replica: in a "
        "partition, about how long until another replica takes over the background loops. "
        "Must exceed the longest loop interval plus db_lease_ping_deadline_s.",
    )
    db_lease_ping_deadline_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="PostgreSQL: a leader whose check of its lease session does not answer "
        "within this steps down; it also steps down when its last answered check is older "
        "than db_lease_timeout_s minus this, so it is never still acting as leader once the "
        "server may have freed its lock.",
    )
    test_clock_file: Path | None = Field(
        default=None,
        description="TEST MODE ONLY (off by default): a file holding an ISO 8601 instant "
        "that schedules and triggers take as the time, read at every pass, so a test with "
        "real processes can make a slot arrive without waiting. Unset in production: the "
        "system clock is used and nothing is read.",
    )

    @model_validator(mode="after")
    def _defaults_within_bounds(self) -> HubSettings:
        """A default TTL above its own maximum would refuse every call that names none."""
        if self.enrollment_ttl_s > self.enrollment_max_ttl_s:
            raise ValueError("enrollment_ttl_s must not exceed enrollment_max_ttl_s")
        if max(self.admin_token_ttl_s, self.token_ttl_s) > self.token_max_ttl_s:
            raise ValueError("admin_token_ttl_s and token_ttl_s must not exceed token_max_ttl_s")
        loops = max(self.rollout_interval_s, self.schedule_interval_s)
        if self.db_lease_timeout_s <= loops + 2 * self.db_lease_ping_deadline_s:
            # A leader polls its lease once per loop interval: a shorter lease would make a
            # healthy leader step down (or be ended by the server) between two polls.
            raise ValueError(
                f"db_lease_timeout_s ({self.db_lease_timeout_s:g}) must exceed the longest "
                f"loop interval (rollout_interval_s, schedule_interval_s: {loops:g}) plus "
                f"twice db_lease_ping_deadline_s ({self.db_lease_ping_deadline_s:g}); raise "
                "db_lease_timeout_s or lower the interval"
            )
        return self

    def default_token_ttl_s(self, role: str) -> float:
        """The lifetime a token of ``role`` gets when its creator names none."""
        return self.admin_token_ttl_s if role == "admin" else self.token_ttl_s

    def token_ttl(self, ttl: str | float | None, role: str) -> float:
        """A requested token TTL (or the role's default) in seconds, within the bound."""
        if ttl is None:
            return self.default_token_ttl_s(role)
        seconds = parse_duration(ttl, "token TTL")
        if seconds > self.token_max_ttl_s:
            raise InvalidInput(
                f"token TTL {ttl!r} is longer than the hub allows "
                f"({format_duration(self.token_max_ttl_s)}, MODELFLEET_HUB_TOKEN_MAX_TTL_S)"
            )
        return seconds

    def enrollment_ttl(self, ttl: str | float | None) -> float:
        """A requested enrollment TTL (or the default) in seconds, within the bound."""
        if ttl is None:
            return self.enrollment_ttl_s
        seconds = parse_duration(ttl, "enrollment TTL")
        if seconds > self.enrollment_max_ttl_s:
            raise InvalidInput(
                f"enrollment TTL {ttl!r} is longer than the hub allows "
                f"({format_duration(self.enrollment_max_ttl_s)}, "
                "MODELFLEET_HUB_ENROLLMENT_MAX_TTL_S)"
            )
        return seconds


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
    eval_max_rows: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        description="The most labelled rows one evaluation task scores per version (the "
        "first rows of the chosen part of the data set): bounds the work the hub can ask of "
        "a site (docs/evaluations.md).",
    )
    eval_poll_s: float = Field(
        default=30.0,
        gt=0,
        le=120,
        description="How long each evaluation task request waits for a task (long-poll).",
    )
    feedback_enabled: bool = Field(
        default=True,
        description="Remember each answered request's prediction by request id so labels "
        "posted later (POST /v2/models/{m}/feedback, docs/feedback.md) are joined here and "
        "shipped as counts only. Needs telemetry on.",
    )
    feedback_window_s: float = Field(
        default=86_400.0,
        gt=0,
        le=90 * 86_400.0,
        description="How long after a prediction its label is still counted; a later label "
        "is dropped as 'expired' (predictions older than twice this are forgotten).",
    )
    feedback_max_predictions: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        description="Predictions remembered per model awaiting a label (the oldest go first): "
        "bounds the site's feedback.db.",
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
