"""The Open Inference Protocol endpoints other than ``/infer``: health, metadata, repository.

None of these is on the hot path, but they are what Triton's and KServe's clients call before
their first inference, so their shapes follow the protocol exactly: metadata lists the
loaded versions as strings and -1 for dynamic dimensions; readiness answers 200 or a 4xx/503
with a small JSON body; errors are ``{"error": "..."}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from modelfleet._version import __version__
from modelfleet.errors import NotFound
from modelfleet.oip.paths import parse_model_path
from modelfleet.site.repository import ModelRepository
from modelfleet.site.runtime import LoadedModel, TensorSpec

__all__ = ["EXTENSIONS", "PLATFORM", "Answer", "OipRoutes"]

#: Extensions this server implements (Triton's names, which KServe's clients also read).
EXTENSIONS = ["binary_tensor_data", "model_repository"]
PLATFORM = "onnx_onnxv1"
SERVER_NAME = "modelfleet-site"

#: (HTTP status, JSON document)
Answer = tuple[int, Any]


def _spec(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype or "BYTES", "shape": list(spec.shape)}


class OipRoutes:
    """Answers the non-inference endpoints from the repository's lock-free view."""

    def __init__(self, repository: ModelRepository, ready: Callable[[], bool]) -> None:
        self.repository = repository
        self.ready = ready

    def lookup(self, name: str, version: int | None) -> LoadedModel:
        """The model for a route; ``NotFound`` says which model or version is missing."""
        if version == -1:
            raise NotFound(f"model {name!r} has no such version (versions are integers)")
        return self.repository.get(name, version)

    def dispatch(self, method: str, path: str, body: bytes) -> Answer:
        """Route one request; unknown paths 404, wrong methods 405."""
        if path in ("/v2", "/v2/"):
            return self._only(method, "GET") or self.server_metadata()
        if path == "/v2/health/live":
            return self._only(method, "GET") or (200, {"live": True})
        if path == "/v2/health/ready":
            if wrong := self._only(method, "GET"):
                return wrong
            ok = self.ready()
            return (200 if ok else 503), {"ready": ok}
        if path == "/v2/repository/index":
            return self._only(method, "POST") or self.repository_index(body)
        target = parse_model_path(path)
        if target is not None:
            if target.action == "infer":  # a POST never gets here: the server runs it
                return 405, {"error": "inference takes POST"}
            if wrong := self._only(method, "GET"):
                return wrong
            if target.action == "ready":
                return self.model_ready(target.name, target.version)
            return self.model_metadata(target.name, target.version)
        return 404, {"error": f"no such endpoint: {path[:200]}"}

    @staticmethod
    def _only(method: str, allowed: str) -> Answer | None:
        if method == allowed or (allowed == "GET" and method == "HEAD"):
            return None
        return 405, {"error": f"method {method} not allowed here; use {allowed}"}

    def server_metadata(self) -> Answer:
        return 200, {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: int | None) -> Answer:
        if not self.ready():
            return 503, {"error": "the site is starting; models are not restored yet"}
        try:
            model = self.lookup(name, version)
        except NotFound as exc:
            return 404, {"error": exc.message}
        loaded = self.repository.snapshot().get(name, {}).get("loaded", [model.version])
        return 200, {
            "name": model.name,
            "versions": [str(v) for v in loaded],
            "platform": PLATFORM,
            "inputs": [_spec(s) for s in model.inputs],
            "outputs": [_spec(s) for s in model.outputs],
        }

    def model_ready(self, name: str, version: int | None) -> Answer:
        if not self.ready():
            return 503, {"name": name, "ready": False, "error": "the site is starting"}
        try:
            model = self.lookup(name, version)
        except NotFound as exc:
            return 404, {"name": name, "ready": False, "error": exc.message}
        return 200, {"name": model.name, "version": str(model.version), "ready": True}

    def repository_index(self, body: bytes) -> Answer:
        """Every loaded version (``{"ready": true}`` in the body keeps ready ones: all are)."""
        if body.strip():
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                return 400, {"error": f"repository index: malformed JSON: {exc}"}
            if not isinstance(doc, dict):
                return 400, {"error": "repository index: body must be a JSON object"}
            if "ready" in doc and not isinstance(doc["ready"], bool):
                return 400, {"error": "repository index: 'ready' must be true or false"}
        entries = []
        for name, info in self.repository.snapshot().items():
            for version in info["loaded"]:
                entries.append(
                    {"name": name, "version": str(version), "state": "READY", "reason": ""}
                )
        return 200, entries
