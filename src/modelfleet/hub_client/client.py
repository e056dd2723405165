""":class:`HubClient`: the registry, sites, access, telemetry, deployment and federated
learning calls, over :class:`~modelfleet.hub_client.loop.LoopCalls` (the closed loop's) and
the transport in :mod:`modelfleet.hub_client.base`. Every answer is parsed into its record
from :mod:`modelfleet.api`, so a caller reads ``site.online`` and mypy checks it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from modelfleet.api import (
    ApplyResult,
    Assignment,
    AssignmentsRevision,
    AuditEntry,
    Consents,
    ControllerStatus,
    Deployment,
    DeployResult,
    DriftReport,
    FederatedJob,
    Model,
    ModelDetail,
    Override,
    Plan,
    Policy,
    PolicyChanges,
    ReferenceProfile,
    Rollout,
    SigningKey,
    Site,
    SiteEnrollment,
    TelemetryStatus,
    Token,
    TokenCreated,
    Version,
)
from modelfleet.api.accuracy import AccuracyReport
from modelfleet.errors import HubUnreachable, InvalidInput, ModelfleetError
from modelfleet.hub_client.loop import LoopCalls
from modelfleet.refs import parse_ref
from modelfleet.registry.manifest import verify_manifest

Progress = Callable[[int], None]
_CHUNK = 1 << 20


class HubClient(LoopCalls):
    """Synchronous client of the hub's ``/api/v1``; thread-safe (one :class:`HubSession`).

    Answers are records from :mod:`modelfleet.api` (pydantic models that keep fields a newer
    hub adds); lists are ``list[Record]``; removals return None. Errors are raised as the
    classes in :mod:`modelfleet.errors` (``NotFound``, ``Conflict``, ``PermissionDenied``,
    ``HubUnreachable``...), all exported from ``modelfleet``.

    One rule for the verbs:

    - ``list_x()`` -> ``list[X]``; ``get_x(key)`` -> ``X`` (404: :class:`NotFound`);
    - ``add_x`` registers something the caller names (a site); ``create_x`` something the
      hub mints an id or secret for (a token);
    - ``set_x`` replaces a value in place (alias, assignments, drift thresholds, reference
      profile); ``remove_x`` deletes it and returns None;
    - ``revoke_token`` keeps the row (listed with ``revoked_at``), so it is not ``remove``;
    - domain actions keep their own verb: ``push``, ``pull``, ``resolve``, ``assign`` /
      ``unassign``, ``pin`` / ``unpin``, ``deploy``, ``plan_deployment``, ``apply_fleet``,
      ``apply_policies``, ``rollout_action``, ``start_`` / ``abort_federated_job``.

    :meth:`request` is the escape hatch for anything else (raw :class:`httpx.Response`).
    """

    # --- registry -------------------------------------------------------------------

    def push(
        self,
        path: str | Path,
        name: str,
        *,
        training_regions: list[str] | tuple[str, ...] = (),
        alias: str | None = None,
        description: str = "",
        framework: str | None = None,
        parent: int | None = None,
        tags: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
        progress: Progress | None = None,
    ) -> Version:
        """Upload an ONNX file as the next version of ``name``; returns the version."""
        file = Path(path)
        if not file.is_file():
            raise InvalidInput(f"{file} is not a file")
        params: list[tuple[str, str]] = [("training_region", r) for r in training_regions]
        params += [("tag", f"{k}={v}") for k, v in (tags or {}).items()]
        for key, value in (
            ("alias", alias),
            ("description", description or None),
            ("framework", framework),
            ("parent", str(parent) if parent is not None else None),
            ("metrics", json.dumps(metrics) if metrics else None),
        ):
            if value is not None:
                params.append((key, value))
        size = file.stat().st_size

        def body() -> Iterator[bytes]:
            with file.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    if progress:
                        progress(len(chunk))
                    yield chunk

        return self._one(
            Version,
            "POST",
            f"/api/v1/models/{name}/versions",
            params=params,
            content=body(),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )

    def list_models(self) -> list[Model]:
        return self._many(Model, "GET", "/api/v1/models")

    def get_model(self, name: str) -> ModelDetail:
        """A model with every version (was ``show_model``)."""
        return self._one(ModelDetail, "GET", f"/api/v1/models/{name}")

    def resolve(self, ref: str) -> Version:
        """The version ``ref`` (``name``, ``name:3``, ``name@alias``) names now."""
        parse_ref(ref)
        return self._one(Version, "GET", f"/api/v1/resolve/{ref}")

    def set_alias(self, name: str, alias: str, version: int) -> Model:
        return self._one(
            Model, "PUT", f"/api/v1/models/{name}/aliases/{alias}", json={"version": version}
        )

    def remove_alias(self, name: str, alias: str) -> None:
        """Drop an alias (was ``delete_alias``); the version it named stays."""
        self.request("DELETE", f"/api/v1/models/{name}/aliases/{alias}")

    def get_signing_key(self) -> SigningKey:
        """The hub's current manifest signing key (what a site pins)."""
        return self._one(SigningKey, "GET", "/api/v1/keys/signing")

    def pull(
        self,
        ref: str,
        dest: str | Path,
        *,
        public_key: str | None = None,
        progress: Progress | None = None,
    ) -> Version:
        """Download a version to ``dest``, resuming a partial ``dest.part`` with Range.

        The bytes are verified against the signed manifest (digest, size, signature with
        ``public_key`` or, when not pinned, the key the hub serves) before ``dest`` appears.
        """
        version = self.resolve(ref)
        target = Path(dest)
        partial = target.with_name(target.name + ".part")
        url = f"/api/v1/models/{version.model}/versions/{version.version}/artifact"
        try:
            self._session.download(url, partial, version.size, progress=progress)
        except HubUnreachable as exc:
            raise HubUnreachable(f"{exc.message}; run the same command again to resume") from exc
        key = public_key or self.get_signing_key().public_key
        try:
            verify_manifest(version.manifest, version.signature, key, blob=partial)
        except ModelfleetError:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, target)
        return version

    # --- sites ------------------------------------------------------------------------

    def add_site(
        self, name: str, labels: dict[str, str], *, enrollment_ttl_s: str | float | None = None
    ) -> SiteEnrollment:
        """Register a site; the answer carries its one-time ``enrollment_token``."""
        return self._one(
            SiteEnrollment,
            "POST",
            "/api/v1/sites",
            json={"name": name, "labels": labels, "enrollment_ttl_s": enrollment_ttl_s},
        )

    def reissue_enrollment(
        self, name: str, *, enrollment_ttl_s: str | float | None = None
    ) -> SiteEnrollment:
        """A new one-time enrollment token for an existing site (the old one stops working)."""
        return self._one(
            SiteEnrollment,
            "POST",
            f"/api/v1/sites/{name}/enrollment",
            json={"enrollment_ttl_s": enrollment_ttl_s},
        )

    def list_sites(self) -> list[Site]:
        return self._many(Site, "GET", "/api/v1/sites")

    def get_site(self, name: str) -> Site:
        """One site (was ``show_site``)."""
        return self._one(Site, "GET", f"/api/v1/sites/{name}")

    def remove_site(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/sites/{name}")

    def decommission_site(self, name: str) -> Site:
        """Unassign every model of the site and have it wipe its cache (signed)."""
        return self._one(Site, "POST", f"/api/v1/sites/{name}/decommission")

    def assign(self, site: str, ref: str, params: dict[str, Any] | None = None) -> Assignment:
        return self._one(
            Assignment,
            "POST",
            f"/api/v1/sites/{site}/assignments",
            json={"ref": ref, "params": params or {}},
        )

    def unassign(self, site: str, model: str) -> None:
        self.request("DELETE", f"/api/v1/sites/{site}/assignments/{model}")

    def set_assignments(self, site: str, refs: list[str]) -> AssignmentsRevision:
        return self._one(
            AssignmentsRevision,
            "PUT",
            f"/api/v1/sites/{site}/assignments",
            json={"models": [{"ref": r} for r in refs]},
        )

    # --- access -----------------------------------------------------------------------

    def create_token(
        self,
        name: str,
        role: str,
        *,
        ttl: str | float | None = None,
        expires_in_days: float | None = None,
        models: list[str] | None = None,
        site_selector: str | None = None,
    ) -> TokenCreated:
        """A new token; its secret (``token``) is in this answer only.

        ``ttl``: ``"12h"``, ``"30d"`` or seconds (None: the hub's default for the role).
        ``expires_in_days`` is the older spelling of the same, kept for existing callers.
        ``models`` and ``site_selector`` limit an ``infer`` token to those models and sites."""
        if ttl is None and expires_in_days is not None:
            ttl = expires_in_days * 86400.0
        body: dict[str, Any] = {"name": name, "role": role, "ttl": ttl}
        if models is not None:
            body["models"] = models
        if site_selector is not None:
            body["site_selector"] = site_selector
        return self._one(TokenCreated, "POST", "/api/v1/tokens", json=body)

    def list_tokens(self) -> list[Token]:
        return self._many(Token, "GET", "/api/v1/tokens")

    def revoke_token(self, token_id: str) -> None:
        """Revoke a token: it stops working but stays listed, with ``revoked_at``."""
        self.request("DELETE", f"/api/v1/tokens/{token_id}")

    def list_audit(
        self, *, limit: int = 100, actor: str | None = None, action: str | None = None
    ) -> list[AuditEntry]:
        """The audit log, newest first (was ``audit``)."""
        params: dict[str, str | int] = {"limit": limit}
        if actor:
            params["actor"] = actor
        if action:
            params["action"] = action
        return self._many(AuditEntry, "GET", "/api/v1/audit", params=params)

    # --- telemetry and drift ------------------------------------------------------------

    def get_telemetry_status(self) -> TelemetryStatus:
        """Every site at a glance: liveness, traffic, latency, drift flags, dropped telemetry."""
        return self._one(TelemetryStatus, "GET", "/api/v1/telemetry/status")

    def get_accuracy(
        self, model: str, *, site: str | None = None, version: int | None = None
    ) -> AccuracyReport:
        """Accuracy (or MAE) of ``model`` per site x version from the labels sites fed back."""
        params: dict[str, str | int] = {"model": model}
        if site is not None:
            params["site"] = site
        if version is not None:
            params["version"] = version
        return self._one(AccuracyReport, "GET", "/api/v1/accuracy", params=params)

    def get_drift(
        self, model: str, *, version: int | None = None, site: str | None = None
    ) -> DriftReport:
        """Per-feature drift of ``model`` per site and version (see ``monitoring/drift.py``)."""
        params: dict[str, str | int] = {}
        if version is not None:
            params["version"] = version
        if site is not None:
            params["site"] = site
        return self._one(DriftReport, "GET", f"/api/v1/telemetry/drift/{model}", params=params)

    def set_reference_profile(
        self, name: str, version: int, profile: dict[str, Any]
    ) -> ReferenceProfile:
        """Store a reference profile (``monitoring.profiles.DatasetProfile.to_dict()``)."""
        return self._one(
            ReferenceProfile,
            "PUT",
            f"/api/v1/models/{name}/versions/{version}/reference-profile",
            json=profile,
        )

    def get_reference_profile(self, name: str, version: int) -> ReferenceProfile:
        return self._one(
            ReferenceProfile, "GET", f"/api/v1/models/{name}/versions/{version}/reference-profile"
        )

    def get_drift_thresholds(self, model: str) -> dict[str, float]:
        """The thresholds in force (defaults merged with the model's overrides)."""
        result: dict[str, float] = self._json("GET", f"/api/v1/models/{model}/drift-thresholds")[
            "thresholds"
        ]
        return result

    def set_drift_thresholds(self, model: str, values: dict[str, float]) -> dict[str, float]:
        result: dict[str, float] = self._json(
            "PUT", f"/api/v1/models/{model}/drift-thresholds", json=values
        )["thresholds"]
        return result

    def anomalies(
        self,
        *,
        site: str | None = None,
        model: str | None = None,
        open_only: bool = False,
        since_s: float | None = None,
    ) -> dict[str, Any]:
        """Anomalies per site x model (``GET /api/v1/anomalies``): ``{"since_s", "open",
        "truncated", "anomalies": [...]}``, see ``hub/api/anomalies.py``."""
        params: dict[str, str | float] = {}
        if site is not None:
            params["site"] = site
        if model is not None:
            params["model"] = model
        if open_only:
            params["open_only"] = "true"
        if since_s is not None:
            params["since_s"] = since_s
        result: dict[str, Any] = self._json("GET", "/api/v1/anomalies", params=params)
        return result

    def get_anomaly_settings(self, model: str) -> dict[str, Any]:
        """The anomaly detector settings in force for ``model``."""
        result: dict[str, Any] = self._json("GET", f"/api/v1/models/{model}/anomaly-settings")[
            "settings"
        ]
        return result

    def set_anomaly_settings(self, model: str, values: dict[str, Any]) -> dict[str, Any]:
        """Override some anomaly settings of ``model``; returns all settings in force."""
        result: dict[str, Any] = self._json(
            "PUT", f"/api/v1/models/{model}/anomaly-settings", json=values
        )["settings"]
        return result

    # --- deployments, policies, rollouts (issue 6) -----------------------------------------

    def plan_deployment(self, request: dict[str, Any]) -> Plan:
        """What ``deploy`` would do; ``request`` as in :meth:`deploy`. Changes nothing."""
        return self._one(Plan, "POST", "/api/v1/deployments/plan", json=request)

    def deploy(self, request: dict[str, Any]) -> DeployResult:
        """Create or update a deployment: ``{"ref", "selector", "name"?, "strategy"?,
        "gates"?, "params"?}``; the answer holds the deployment, its rollout and the plan."""
        return self._one(DeployResult, "POST", "/api/v1/deployments", json=request)

    def list_deployments(self) -> list[Deployment]:
        return self._many(Deployment, "GET", "/api/v1/deployments")

    def get_deployment(self, name: str) -> Deployment:
        """One deployment (was ``show_deployment``)."""
        return self._one(Deployment, "GET", f"/api/v1/deployments/{name}")

    def remove_deployment(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/deployments/{name}")

    def pin(self, site: str, ref: str, reason: str = "") -> Override:
        return self._one(
            Override, "PUT", "/api/v1/overrides", json={"site": site, "ref": ref, "reason": reason}
        )

    def unpin(self, site: str, model: str) -> None:
        self.request("DELETE", f"/api/v1/overrides/{site}/{model}")

    def list_overrides(self) -> list[Override]:
        return self._many(Override, "GET", "/api/v1/overrides")

    def apply_policies(
        self, policies: list[dict[str, Any]], *, prune: bool = False
    ) -> PolicyChanges:
        return self._one(
            PolicyChanges, "PUT", "/api/v1/policies", json={"policies": policies, "prune": prune}
        )

    def list_policies(self) -> list[Policy]:
        return self._many(Policy, "GET", "/api/v1/policies")

    def remove_policy(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/policies/{name}")

    def list_rollouts(self, state: str | None = None) -> list[Rollout]:
        params = {"state": state} if state else {}
        return self._many(Rollout, "GET", "/api/v1/rollouts", params=params)

    def get_rollout(self, rollout_id: str) -> Rollout:
        """One rollout with per-wave progress (was ``rollout``)."""
        return self._one(Rollout, "GET", f"/api/v1/rollouts/{rollout_id}")

    def rollout_action(self, rollout_id: str, action: str) -> Rollout:
        """``pause``, ``resume``, ``promote``, ``abort``, ``rollback`` or ``approve``."""
        return self._one(Rollout, "POST", f"/api/v1/rollouts/{rollout_id}/{action}")

    def approve_rollout(self, rollout_id: str) -> Rollout:
        """Let a rollout waiting for approval start its next wave (operator role)."""
        return self.rollout_action(rollout_id, "approve")

    def get_controller_status(self) -> ControllerStatus:
        """Whether the answering hub process leads (was ``controller_status``)."""
        return self._one(ControllerStatus, "GET", "/api/v1/controller")

    def apply_fleet(
        self, doc: dict[str, Any], *, prune: bool = False, dry_run: bool = False
    ) -> ApplyResult:
        return self._one(
            ApplyResult,
            "POST",
            "/api/v1/apply",
            json={"doc": doc, "prune": prune, "dry_run": dry_run},
        )

    # --- federated learning -----------------------------------------------------------

    def start_federated_job(self, job: dict[str, Any]) -> FederatedJob:
        """Start a job (the ``fl start`` fields: model, data, rounds, sites, strategy...);
        idempotent when ``job`` carries an ``id``."""
        return self._one(FederatedJob, "POST", "/api/v1/federation/jobs", json=job)

    def get_federated_job(self, job_id: str) -> FederatedJob:
        """A job with every round's participants, metrics and duration (was
        ``federated_job``)."""
        return self._one(FederatedJob, "GET", f"/api/v1/federation/jobs/{job_id}")

    def list_federated_jobs(self) -> list[FederatedJob]:
        return self._many(FederatedJob, "GET", "/api/v1/federation/jobs")

    def abort_federated_job(
        self, job_id: str, reason: str = "aborted by an operator"
    ) -> FederatedJob:
        return self._one(
            FederatedJob,
            "POST",
            f"/api/v1/federation/jobs/{job_id}/abort",
            json={"reason": reason},
        )

    def get_federated_round_weights(self, job_id: str, number: int) -> bytes:
        """The global weights a round started from (a tensor envelope, see ``wire``)."""
        return self.request(
            "GET", f"/api/v1/federation/jobs/{job_id}/rounds/{number}/weights"
        ).content

    def get_federation_consents(self) -> Consents:
        """What each site declared about taking part in federated jobs (site -> consent)."""
        result: Consents = self._json("GET", "/api/v1/federation/consent")
        return result
