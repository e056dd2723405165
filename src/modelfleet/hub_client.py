"""``HubClient``: the SDK's typed access to the hub API (what the CLI is built on)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from modelfleet.errors import HubUnreachable, InvalidInput, ModelfleetError
from modelfleet.pki.tls import TlsFiles
from modelfleet.refs import parse_ref
from modelfleet.registry.manifest import verify_manifest
from modelfleet.settings import ClientSettings
from modelfleet.transport.session import HubSession

Progress = Callable[[int], None]
_CHUNK = 1 << 20


class HubClient:
    """Synchronous client of the hub's ``/api/v1``; thread-safe (one :class:`HubSession`)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        ca_file: str | Path | None = None,
        timeout: float = 60.0,
    ) -> None:
        env = ClientSettings()
        self.url = (url or env.hub_url).rstrip("/")
        self.token = token if token is not None else env.token
        ca = Path(ca_file) if ca_file is not None else env.ca_file
        self._session = HubSession(self.url, self.token, tls=TlsFiles(ca), timeout=timeout)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Any hub request (``kwargs`` as :meth:`HubSession.request`); errors raised."""
        return self._session.request(method, path, **kwargs)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

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
    ) -> dict[str, Any]:
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

        result: dict[str, Any] = self._json(
            "POST",
            f"/api/v1/models/{name}/versions",
            params=params,
            content=body(),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        return result

    def list_models(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/models")
        return result

    def show_model(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/v1/models/{name}")
        return result

    def resolve(self, ref: str) -> dict[str, Any]:
        parse_ref(ref)
        result: dict[str, Any] = self._json("GET", f"/api/v1/resolve/{ref}")
        return result

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "PUT", f"/api/v1/models/{name}/aliases/{alias}", json={"version": version}
        )
        return result

    def delete_alias(self, name: str, alias: str) -> None:
        self.request("DELETE", f"/api/v1/models/{name}/aliases/{alias}")

    def signing_key(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/api/v1/keys/signing")
        return result

    def pull(
        self,
        ref: str,
        dest: str | Path,
        *,
        public_key: str | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Download a version to ``dest``, resuming a partial ``dest.part`` with Range.

        The bytes are verified against the signed manifest (digest, size, signature with
        ``public_key`` or, when not pinned, the key the hub serves) before ``dest`` appears.
        """
        version = self.resolve(ref)
        target = Path(dest)
        partial = target.with_name(target.name + ".part")
        url = f"/api/v1/models/{version['model']}/versions/{version['version']}/artifact"
        try:
            self._session.download(url, partial, version["size"], progress=progress)
        except HubUnreachable as exc:
            raise HubUnreachable(f"{exc.message}; run the same command again to resume") from exc
        key = public_key or self.signing_key()["public_key"]
        try:
            verify_manifest(version["manifest"], version["signature"], key, blob=partial)
        except ModelfleetError:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, target)
        return version

    # --- sites ------------------------------------------------------------------------

    def add_site(
        self, name: str, labels: dict[str, str], *, enrollment_ttl_s: float | None = None
    ) -> dict[str, Any]:
        """Register a site; the answer carries its one-time ``enrollment_token``."""
        result: dict[str, Any] = self._json(
            "POST",
            "/api/v1/sites",
            json={"name": name, "labels": labels, "enrollment_ttl_s": enrollment_ttl_s},
        )
        return result

    def reissue_enrollment(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("POST", f"/api/v1/sites/{name}/enrollment")
        return result

    def list_sites(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/sites")
        return result

    def show_site(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/v1/sites/{name}")
        return result

    def remove_site(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/sites/{name}")

    def assign(self, site: str, ref: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "POST", f"/api/v1/sites/{site}/assignments", json={"ref": ref, "params": params or {}}
        )
        return result

    def unassign(self, site: str, model: str) -> None:
        self.request("DELETE", f"/api/v1/sites/{site}/assignments/{model}")

    def set_assignments(self, site: str, refs: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "PUT",
            f"/api/v1/sites/{site}/assignments",
            json={"models": [{"ref": r} for r in refs]},
        )
        return result

    # --- access -----------------------------------------------------------------------

    def create_token(
        self, name: str, role: str, *, expires_in_days: float | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "POST",
            "/api/v1/tokens",
            json={"name": name, "role": role, "expires_in_days": expires_in_days},
        )
        return result

    def list_tokens(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/tokens")
        return result

    def revoke_token(self, token_id: str) -> None:
        self.request("DELETE", f"/api/v1/tokens/{token_id}")

    def audit(
        self, *, limit: int = 100, actor: str | None = None, action: str | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, str | int] = {"limit": limit}
        if actor:
            params["actor"] = actor
        if action:
            params["action"] = action
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/audit", params=params)
        return result

    # --- telemetry and drift ------------------------------------------------------------

    def telemetry_status(self) -> dict[str, Any]:
        """Every site at a glance: liveness, traffic, latency, drift flags, dropped telemetry."""
        result: dict[str, Any] = self._json("GET", "/api/v1/telemetry/status")
        return result

    def drift(
        self, model: str, *, version: int | None = None, site: str | None = None
    ) -> dict[str, Any]:
        """Per-feature drift of ``model`` per site and version (see ``monitoring/drift.py``)."""
        params: dict[str, str | int] = {}
        if version is not None:
            params["version"] = version
        if site is not None:
            params["site"] = site
        result: dict[str, Any] = self._json(
            "GET", f"/api/v1/telemetry/drift/{model}", params=params
        )
        return result

    def put_reference_profile(
        self, name: str, version: int, profile: dict[str, Any]
    ) -> dict[str, Any]:
        """Store a reference profile (``monitoring.profiles.DatasetProfile.to_dict()``)."""
        result: dict[str, Any] = self._json(
            "PUT", f"/api/v1/models/{name}/versions/{version}/reference-profile", json=profile
        )
        return result

    def reference_profile(self, name: str, version: int) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "GET", f"/api/v1/models/{name}/versions/{version}/reference-profile"
        )
        return result

    def drift_thresholds(self, model: str) -> dict[str, float]:
        result: dict[str, float] = self._json("GET", f"/api/v1/models/{model}/drift-thresholds")[
            "thresholds"
        ]
        return result

    def set_drift_thresholds(self, model: str, values: dict[str, float]) -> dict[str, float]:
        result: dict[str, float] = self._json(
            "PUT", f"/api/v1/models/{model}/drift-thresholds", json=values
        )["thresholds"]
        return result

    # --- deployments, policies, rollouts (issue 6) -----------------------------------------

    def plan_deployment(self, request: dict[str, Any]) -> dict[str, Any]:
        """What ``deploy`` would do; ``request`` as in :meth:`deploy`. Changes nothing."""
        result: dict[str, Any] = self._json("POST", "/api/v1/deployments/plan", json=request)
        return result

    def deploy(self, request: dict[str, Any]) -> dict[str, Any]:
        """Create or update a deployment: ``{"ref", "selector", "name"?, "strategy"?,
        "gates"?, "params"?}``; the answer holds the deployment, its rollout and the plan."""
        result: dict[str, Any] = self._json("POST", "/api/v1/deployments", json=request)
        return result

    def list_deployments(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/deployments")
        return result

    def show_deployment(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/v1/deployments/{name}")
        return result

    def remove_deployment(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/deployments/{name}")

    def pin(self, site: str, ref: str, reason: str = "") -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "PUT", "/api/v1/overrides", json={"site": site, "ref": ref, "reason": reason}
        )
        return result

    def unpin(self, site: str, model: str) -> None:
        self.request("DELETE", f"/api/v1/overrides/{site}/{model}")

    def list_overrides(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/overrides")
        return result

    def apply_policies(
        self, policies: list[dict[str, Any]], *, prune: bool = False
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "PUT", "/api/v1/policies", json={"policies": policies, "prune": prune}
        )
        return result

    def list_policies(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/policies")
        return result

    def remove_policy(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/policies/{name}")

    def list_rollouts(self, state: str | None = None) -> list[dict[str, Any]]:
        params = {"state": state} if state else {}
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/rollouts", params=params)
        return result

    def rollout(self, rollout_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/v1/rollouts/{rollout_id}")
        return result

    def rollout_action(self, rollout_id: str, action: str) -> dict[str, Any]:
        """``pause``, ``resume``, ``promote``, ``abort`` or ``rollback``."""
        result: dict[str, Any] = self._json("POST", f"/api/v1/rollouts/{rollout_id}/{action}")
        return result

    def controller_status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/api/v1/controller")
        return result

    def apply_fleet(
        self, doc: dict[str, Any], *, prune: bool = False, dry_run: bool = False
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "POST", "/api/v1/apply", json={"doc": doc, "prune": prune, "dry_run": dry_run}
        )
        return result

    # --- federated learning -----------------------------------------------------------

    def start_federated_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """Start a job (the ``fl start`` fields: model, data, rounds, sites, strategy...);
        idempotent when ``job`` carries an ``id``."""
        result: dict[str, Any] = self._json("POST", "/api/v1/federation/jobs", json=job)
        return result

    def federated_job(self, job_id: str) -> dict[str, Any]:
        """A job with every round's participants, metrics and duration."""
        result: dict[str, Any] = self._json("GET", f"/api/v1/federation/jobs/{job_id}")
        return result

    def list_federated_jobs(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/federation/jobs")
        return result

    def abort_federated_job(
        self, job_id: str, reason: str = "aborted by an operator"
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "POST", f"/api/v1/federation/jobs/{job_id}/abort", json={"reason": reason}
        )
        return result

    def federated_round_weights(self, job_id: str, number: int) -> bytes:
        """The global weights a round started from (a tensor envelope, see ``wire``)."""
        return self.request(
            "GET", f"/api/v1/federation/jobs/{job_id}/rounds/{number}/weights"
        ).content

    def federation_consents(self) -> dict[str, dict[str, Any]]:
        """What each site declared about taking part in federated jobs."""
        result: dict[str, dict[str, Any]] = self._json("GET", "/api/v1/federation/consent")
        return result
