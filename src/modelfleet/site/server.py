"""The site's Open Inference Protocol v2 server (REST), a thin adapter over the repository.

Errors follow the protocol: ``{"error": "..."}`` with 400 for a bad request, 404 for an
unknown model or version, 503 while not ready; nothing a client sends yields a 500.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from modelfleet import __version__
from modelfleet.errors import InvalidInput, ModelfleetError, NotFound
from modelfleet.oip.codec import binary_output_names, decode_request, encode_response
from modelfleet.oip.types import InferOutput, InferRequest, InferResponse
from modelfleet.site.repository import ModelRepository
from modelfleet.site.runtime import LoadedModel, ModelFailure

EXTENSIONS = ["binary_tensor_data", "model_repository"]
JSON = "application/json"


def _json(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=JSON)


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


class SiteMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "modelfleet_site_inference_requests_total",
            "Inference requests by model, version and outcome",
            ["model", "version", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelfleet_site_inference_seconds",
            "Inference request latency (decode, run, encode)",
            ["model", "version"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )


class InferenceServer:
    """Builds the Starlette app; ``ready`` tells whether start-up restoration is done."""

    def __init__(
        self, repository: ModelRepository, *, ready: Callable[[], bool] | None = None
    ) -> None:
        self.repository = repository
        self.stats = SiteMetrics()
        self._ready = ready or (lambda: True)

    def _model(self, request: Request) -> LoadedModel:
        name = request.path_params["model"]
        version = request.path_params.get("version")
        if version is not None and not str(version).isdigit():
            raise NotFound(f"model {name!r} has no version {version!r}")
        return self.repository.get(name, int(version) if version is not None else None)

    async def live(self, _: Request) -> Response:
        return _json({"live": True})

    async def ready(self, _: Request) -> Response:
        ok = self._ready()
        return _json({"ready": ok}, 200 if ok else 503)

    async def server_metadata(self, _: Request) -> Response:
        return _json({"name": "modelfleet-site", "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(self, request: Request) -> Response:
        try:
            model = self._model(request)
        except NotFound as exc:
            return _error(exc.message, 404)
        loaded = self.repository.snapshot().get(model.name, {}).get("loaded", [model.version])
        return _json(
            {
                "name": model.name,
                "versions": [str(v) for v in loaded],
                "platform": "onnx_onnxv1",
                "inputs": [_spec(s) for s in model.inputs],
                "outputs": [_spec(s) for s in model.outputs],
            }
        )

    async def model_ready(self, request: Request) -> Response:
        try:
            model = self._model(request)
        except NotFound as exc:
            return _json(
                {"name": request.path_params["model"], "ready": False, "error": exc.message}, 404
            )
        return _json({"name": model.name, "version": str(model.version), "ready": True})

    async def repository_index(self, _: Request) -> Response:
        entries = []
        for name, info in self.repository.snapshot().items():
            for version in info["loaded"]:
                entries.append(
                    {"name": name, "version": str(version), "state": "READY", "reason": ""}
                )
        return _json(entries)

    async def infer(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            model = self._model(request)
        except NotFound as exc:
            return _error(exc.message, 404)
        version = str(model.version)
        body = await request.body()
        header = request.headers.get("inference-header-content-length")
        try:
            header_length = int(header) if header is not None else None
        except ValueError:
            return _error("Inference-Header-Content-Length must be an integer", 400)
        try:
            req = decode_request(body, header_length)
            response_body, response_header = await run_in_threadpool(self._run, model, req)
        except ModelFailure as exc:
            self.stats.requests.labels(model.name, version, "error").inc()
            return _error(exc.message, 400 if exc.status == 400 else 500)
        except ModelfleetError as exc:
            self.stats.requests.labels(model.name, version, "bad_request").inc()
            return _error(exc.message, 400)
        self.stats.requests.labels(model.name, version, "ok").inc()
        self.stats.latency.labels(model.name, version).observe(time.perf_counter() - started)
        headers = {}
        if response_header is not None:
            headers["Inference-Header-Content-Length"] = str(response_header)
            media = "application/octet-stream"
        else:
            media = JSON
        return Response(response_body, media_type=media, headers=headers)

    def _run(self, model: LoadedModel, req: InferRequest) -> tuple[bytes, int | None]:
        output_names = [o.name for o in model.outputs]
        requested = [o.name for o in req.outputs] if req.outputs else output_names
        unknown = [n for n in requested if n not in output_names]
        if unknown:
            known = ", ".join(output_names)
            raise InvalidInput(f"model {model.name!r} has no output {unknown[0]!r} (has {known})")
        feeds = {inp.name: _feed(inp.data, inp.datatype) for inp in req.inputs}
        results = model.run(feeds, requested)
        specs = {s.name: s for s in model.outputs}
        outputs = []
        for name in requested:
            data = results[name]
            datatype = specs[name].datatype or "BYTES"
            outputs.append(InferOutput(name, datatype, tuple(data.shape), data))
        response = InferResponse(
            model_name=model.name,
            model_version=str(model.version),
            id=req.id,
            outputs=outputs,
            parameters=dict(req.parameters),
        )
        return encode_response(response, binary_outputs=binary_output_names(req, requested))

    async def prometheus(self, _: Request) -> Response:
        return Response(generate_latest(self.stats.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, _: Request) -> Response:
        return _json({"status": "ok", "models": self.repository.snapshot()})

    def app(self) -> Starlette:
        routes = [
            Route("/v2/health/live", self.live),
            Route("/v2/health/ready", self.ready),
            Route("/v2", self.server_metadata),
            Route("/v2/repository/index", self.repository_index, methods=["POST"]),
            Route("/v2/models/{model}", self.model_metadata),
            Route("/v2/models/{model}/versions/{version}", self.model_metadata),
            Route("/v2/models/{model}/ready", self.model_ready),
            Route("/v2/models/{model}/versions/{version}/ready", self.model_ready),
            Route("/v2/models/{model}/infer", self.infer, methods=["POST"]),
            Route("/v2/models/{model}/versions/{version}/infer", self.infer, methods=["POST"]),
            Route("/metrics", self.prometheus),
            Route("/healthz", self.healthz),
        ]

        async def not_found(_: Request, exc: Exception) -> Response:
            return _error("no such endpoint", 404)

        async def method_not_allowed(_: Request, exc: Exception) -> Response:
            return _error("method not allowed", 405)

        return Starlette(
            routes=routes, exception_handlers={404: not_found, 405: method_not_allowed}
        )


def _spec(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def _feed(data: np.ndarray[Any, Any], datatype: str) -> np.ndarray[Any, Any]:
    """onnxruntime wants str for string tensors; the binary extension yields bytes."""
    if datatype == "BYTES" and data.size and isinstance(data.flat[0], bytes):
        try:
            decoded: np.ndarray[Any, Any] = np.vectorize(
                lambda b: b.decode("utf-8"), otypes=[object]
            )(data)
            return decoded
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"BYTES input is not UTF-8 text: {exc}") from exc
    return data
