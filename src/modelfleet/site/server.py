"""The site's Open Inference Protocol v2 server (REST): a raw ASGI app, lean on the hot path.

``/infer`` is the product's hot path, so it bypasses any framework: the ASGI callable
recognises it with two string tests, looks the model up lock-free, decodes with the
``oip`` codecs (orjson + numpy), hands validated feeds to the model's :class:`Batcher`
and writes the encoded answer. Everything per model that a request needs (signature
checks, metric children, batcher) is computed once per loaded version and found with one
dictionary lookup. The other endpoints live in :mod:`modelfleet.site.oip_routes`, and the
ground-truth endpoint (``/feedback``) in :mod:`modelfleet.site.feedback_routes`.

Every request but the health probes needs a credential (:mod:`modelfleet.site.access`):
401 without one, 403 for a model outside the token's scope, checked before anything else.

Errors follow the protocol: ``{"error": "..."}`` with 400 for a bad request, 404 for an
unknown model or version, 413 for an oversized body, 503 while not ready; nothing a client
sends yields a 500 (a 500 means the model itself failed, or a bug, and is logged).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from modelfleet.errors import InvalidInput, ModelFailure, ModelfleetError, NotFound, Overloaded
from modelfleet.oip.codec import binary_output_names, decode_request, encode_response
from modelfleet.oip.headers import INFERENCE_HEADER_LENGTH
from modelfleet.oip.paths import MODELS_PREFIX, parse_model_path
from modelfleet.oip.types import InferOutput, InferRequest, InferResponse
from modelfleet.site.access import OPEN_PATHS, SiteAccess
from modelfleet.site.batcher import DEFAULT_INLINE_BELOW_S, Batcher, BatchPolicy
from modelfleet.site.cascade import Cascade
from modelfleet.site.feedback import FeedbackStore
from modelfleet.site.feedback_routes import FeedbackRoutes, feedback_model
from modelfleet.site.observer import InferenceObserver, NullObserver
from modelfleet.site.oip_routes import OipRoutes
from modelfleet.site.repository import ModelRepository
from modelfleet.site.runtime import LoadedModel
from modelfleet.transport.asgi import ASGIApp, Receive, Scope, Send, read_body, respond

__all__ = ["InferenceServer", "SiteMetrics"]

log = logging.getLogger("modelfleet.site.server")

#: Largest request body accepted (header + binary tensors); larger ones get 413.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
_OCTETS = b"application/octet-stream"
_HEADER_LENGTH = INFERENCE_HEADER_LENGTH.encode()
_INFER_SUFFIX = "/infer"
_REQUEST_ID = b"x-request-id"


#: Outcomes that answered the client (a cascade's cloud answer or degraded local one too).
_ANSWERED = frozenset({"ok", "escalated", "degraded"})


class SiteMetrics:
    """Prometheus counters of the server, on a private registry served at ``/metrics``."""

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


class _Served:
    """What requests to one loaded version need, built once when the version is first hit.

    Holds the model only weakly: the repository decides its lifetime, and a retired version's
    session must be freed as soon as its last request returns.
    """

    def __init__(
        self,
        model: LoadedModel,
        stats: SiteMetrics,
        executor: ThreadPoolExecutor,
        inline_below_s: float,
    ) -> None:
        self.name = model.name
        self.version = model.version
        self.version_text = str(model.version)
        self.inputs = {s.name: (s.datatype, s.shape) for s in model.inputs}
        self.output_types = {s.name: s.datatype for s in model.outputs if s.datatype is not None}
        self.default_outputs = tuple(self.output_types)
        self.policy = BatchPolicy.from_params(model.params)
        ref = weakref.ref(model)

        def run(
            feeds: dict[str, npt.NDArray[Any]], names: list[str]
        ) -> dict[str, npt.NDArray[Any]]:
            target = ref()
            if target is None:  # pragma: no cover - a queued request holds its model
                raise NotFound(f"{self.name}:{self.version} was unloaded")
            return target.run(feeds, names)

        self.batcher = Batcher(
            run, self.policy, executor, batchable=model.batchable, inline_below_s=inline_below_s
        )
        self.ok = stats.requests.labels(self.name, self.version_text, "ok")
        self.bad = stats.requests.labels(self.name, self.version_text, "bad_request")
        self.failed = stats.requests.labels(self.name, self.version_text, "error")
        self.latency = stats.latency.labels(self.name, self.version_text)

    def prepare(self, req: InferRequest) -> tuple[dict[str, npt.NDArray[Any]], tuple[str, ...]]:
        """Feeds checked against the signature, and the output names to compute.

        Checking here, before batching, gives the client a precise 400 and guarantees that
        rows of requests in one batch agree on dtype and trailing dimensions.
        """
        specs = self.inputs
        feeds: dict[str, npt.NDArray[Any]] = {}
        for tensor in req.inputs:
            spec = specs.get(tensor.name)
            if spec is None:
                raise InvalidInput(
                    f"model {self.name!r} has no input {tensor.name[:80]!r}; "
                    f"it takes {sorted(specs)}"
                )
            datatype, shape = spec
            if tensor.datatype != datatype:
                raise InvalidInput(
                    f"input {tensor.name!r} expects datatype {datatype}, got {tensor.datatype}"
                )
            got = tensor.shape
            if len(got) != len(shape) or any(
                want >= 0 and dim != want for dim, want in zip(got, shape, strict=True)
            ):
                raise InvalidInput(
                    f"input {tensor.name!r} expects shape {list(shape)} (-1: any), got {list(got)}"
                )
            data = tensor.data
            if datatype == "BYTES":
                data = _as_text(data, tensor.name)
            feeds[tensor.name] = data
        if len(feeds) != len(specs):
            missing = sorted(specs.keys() - feeds.keys())
            raise InvalidInput(f"missing input(s) {missing} for model {self.name!r}")
        if not req.outputs:
            return feeds, self.default_outputs
        names = tuple(o.name for o in req.outputs)
        for name in names:
            if name not in self.output_types:
                raise InvalidInput(
                    f"model {self.name!r} has no output {name[:80]!r}; "
                    f"it has {list(self.default_outputs)}"
                )
        return feeds, names

    def encode(
        self, req: InferRequest, names: tuple[str, ...], results: dict[str, npt.NDArray[Any]]
    ) -> tuple[bytes, int | None]:
        return encode_response(
            self.response(req, names, results), binary_outputs=binary_output_names(req, names)
        )

    def response(
        self, req: InferRequest, names: tuple[str, ...], results: dict[str, npt.NDArray[Any]]
    ) -> InferResponse:
        types = self.output_types
        outputs = [
            InferOutput(name, types[name], results[name].shape, results[name]) for name in names
        ]
        return InferResponse(
            model_name=self.name,
            model_version=self.version_text,
            id=req.id,
            outputs=outputs,
            parameters=req.parameters,
        )


def _as_text(data: npt.NDArray[Any], name: str) -> npt.NDArray[Any]:
    """onnxruntime takes str for string tensors; the binary extension yields bytes."""
    if not data.size or not isinstance(data.flat[0], bytes):
        return data
    out = np.empty(data.shape, dtype=object)
    flat = out.reshape(-1)
    try:
        for index, item in enumerate(data.reshape(-1).tolist()):
            flat[index] = item.decode() if isinstance(item, bytes) else item
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"input {name!r}: BYTES element is not UTF-8 text: {exc}") from exc
    return out


class InferenceServer:
    """The ASGI app of a site; ``ready`` tells whether start-up restoration is done.

    ``observer`` is called once per answered inference request (telemetry); it must not
    raise, and if it does the request is answered anyway. ``inline_below_s``: batches whose
    recent runs took less than this run on the event loop (see :mod:`.batcher`).
    """

    def __init__(
        self,
        repository: ModelRepository,
        *,
        ready: Callable[[], bool] | None = None,
        observer: InferenceObserver | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        inference_threads: int | None = None,
        inline_below_s: float = DEFAULT_INLINE_BELOW_S,
        cascade: Cascade | None = None,
        access: SiteAccess | None = None,
        feedback: FeedbackStore | None = None,
    ) -> None:
        self.repository = repository
        #: Remembers predictions by request id and joins labels (site/feedback.py); None:
        #: ``/feedback`` answers 404 and nothing is remembered. Fixed at construction.
        self.feedback = feedback
        self.cascade = cascade
        #: Who may call (the agent always sets it); None serves everyone, for a server
        #: embedded in a process that controls its own port (tests of the protocol alone).
        self.access = access
        self.stats = SiteMetrics()
        self.observer: InferenceObserver = observer or NullObserver()
        self.max_body_bytes = max_body_bytes
        self._ready_fn = ready or (lambda: True)
        self._ready_latched = False
        self._inline_below_s = inline_below_s
        self._executor = ThreadPoolExecutor(
            max_workers=inference_threads or max(2, os.cpu_count() or 2),
            thread_name_prefix="modelfleet-infer",
        )
        self._served: weakref.WeakKeyDictionary[LoadedModel, _Served] = weakref.WeakKeyDictionary()
        self.routes = OipRoutes(repository, self.is_ready)
        self._feedback_routes = FeedbackRoutes(feedback, self.routes, self._executor)

    def is_ready(self) -> bool:
        """Start-up restoration done; latched, so the hot path pays one attribute read."""
        if not self._ready_latched:
            self._ready_latched = bool(self._ready_fn())
        return self._ready_latched

    def app(self) -> ASGIApp:
        """The ASGI 3 callable; a plain coroutine function, so servers detect ASGI 3."""
        handle = self.__call__

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await handle(scope, receive, send)

        return app

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def served(self, model: LoadedModel) -> _Served:
        served = self._served.get(model)
        if served is None:
            served = _Served(model, self.stats, self._executor, self._inline_below_s)
            self._served[model] = served
        return served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self._lifespan(receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        access = self.access
        if method == "POST" and path.endswith(_INFER_SUFFIX):
            target = parse_model_path(path)
            if target is not None and target.action == "infer":
                if access is not None and (denied := access.check(scope, target.name)):
                    await _refuse(send, denied)
                    return
                await self._infer(scope, receive, send, target.name, target.version)
                return
        if (name := feedback_model(path)) is not None:
            if access is not None and (denied := access.check(scope, name)):
                await _refuse(send, denied)
                return
            await self._feedback_routes.handle(scope, receive, send, method, name)
            return
        if access is not None and path not in OPEN_PATHS:
            named = parse_model_path(path) if path.startswith(MODELS_PREFIX) else None
            if denied := access.check(scope, named.name if named is not None else None):
                await _refuse(send, denied)
                return
        if path == "/metrics" or path == "/healthz":
            await self._plain(path, send)
            return
        body = b""
        if method == "POST":
            read = await read_body(scope, receive, 1024 * 1024)
            if read is None:
                await respond(send, 413, orjson.dumps({"error": "body too large"}))
                return
            body = read
        status, doc = self.routes.dispatch(method, path, body)
        await respond(send, status, orjson.dumps(doc), head=method == "HEAD")

    async def _infer(
        self, scope: Scope, receive: Receive, send: Send, name: str, version: int | None
    ) -> None:
        started = time.perf_counter()
        if not self._ready_latched and not self.is_ready():
            await _error(send, 503, "the site is starting; models are not restored yet")
            return
        try:
            model = self.routes.lookup(name, version)
        except NotFound as exc:
            await _error(send, 404, exc.message)
            return
        served = self._served.get(model) or self.served(model)
        body = await read_body(scope, receive, self.max_body_bytes)
        if body is None:
            await _error(send, 413, f"request body exceeds {self.max_body_bytes} bytes")
            return
        header_length: int | None = None
        request_id: str | None = None
        outcome = "ok"
        feeds: dict[str, npt.NDArray[Any]] | None = None
        results: dict[str, npt.NDArray[Any]] | None = None
        try:
            for key, value in scope["headers"]:
                if key == _HEADER_LENGTH:
                    if not value.isdigit() or len(value) > 18:
                        raise InvalidInput(
                            "Inference-Header-Content-Length must be a non-negative integer"
                        )
                    header_length = int(value)
                elif key == _REQUEST_ID:
                    request_id = value.decode("latin-1")
            req = decode_request(body, header_length)
            feeds, names = served.prepare(req)
            results = await served.batcher.submit(feeds, names)
            if self.cascade is not None and self.cascade.applies(served.name):
                # Hybrid cloud-edge: a low-confidence local answer may go to the cloud; if the
                # cloud is away the local answer comes back marked degraded, never an error.
                answer = await self.cascade.maybe_escalate(
                    served.name, req, served.response(req, names, results)
                )
                if answer.parameters.get("degraded"):
                    outcome = "degraded"
                elif answer.parameters.get("escalated"):
                    outcome = "escalated"
                payload, response_header = encode_response(
                    answer,
                    binary_outputs=binary_output_names(req, [o.name for o in answer.outputs]),
                )
            else:
                payload, response_header = served.encode(req, names, results)
        except ModelFailure as exc:
            status = 400 if exc.status == 400 else 500
            self._finish(served, started, "bad_request" if status == 400 else "error", feeds)
            await _error(send, status, exc.message)
            return
        except Overloaded as exc:
            self._finish(served, started, "overloaded", feeds)
            await _error(send, 503, exc.message)
            return
        except ModelfleetError as exc:
            self._finish(served, started, "bad_request", feeds)
            await _error(send, 400, exc.message)
            return
        except Exception:  # a bug, not the client's fault; keep serving
            log.exception("inference on %s:%s failed unexpectedly", served.name, served.version)
            self._finish(served, started, "error", feeds)
            await _error(send, 500, "internal error while serving this request")
            return
        headers: list[tuple[bytes, bytes]] | None = None
        if self.feedback is not None:
            # The id a label names later: the request's own, its X-Request-Id, or a new one.
            request_id = req.id or request_id or uuid.uuid4().hex
            headers = [(_REQUEST_ID, request_id.encode("latin-1", "replace"))]
        if response_header is None:
            await respond(send, 200, payload, headers=headers)
        else:
            await respond(
                send,
                200,
                payload,
                content_type=_OCTETS,
                headers=[*(headers or []), (_HEADER_LENGTH, str(response_header).encode())],
            )
        self._finish(served, started, outcome, feeds, results)
        if self.feedback is not None and request_id is not None and results is not None:
            self._feedback_routes.remember(served.name, served.version, request_id, results)

    def _finish(
        self,
        served: _Served,
        started: float,
        outcome: str,
        feeds: dict[str, npt.NDArray[Any]] | None,
        results: dict[str, npt.NDArray[Any]] | None = None,
    ) -> None:
        """Metrics and the telemetry hook; nothing here may fail the request."""
        latency = time.perf_counter() - started
        if outcome in _ANSWERED:
            served.ok.inc()
            served.latency.observe(latency)
        elif outcome == "bad_request":
            served.bad.inc()
        else:
            served.failed.inc()
        rows = 0
        if feeds:
            first = next(iter(feeds.values()))
            rows = int(first.shape[0]) if first.ndim else 1
        try:
            self.observer.observe(
                model=served.name,
                version=served.version,
                latency_s=latency,
                outcome=outcome,
                batch_size=rows,
                inputs=feeds,
                outputs=results,
            )
        except Exception:  # telemetry must never break serving
            log.exception("inference observer failed")

    async def _plain(self, path: str, send: Send) -> None:
        if path == "/metrics":
            await respond(
                send,
                200,
                generate_latest(self.stats.registry),
                content_type=CONTENT_TYPE_LATEST.encode(),
            )
            return
        doc = {"status": "ok", "ready": self.is_ready(), "models": self.repository.snapshot()}
        await respond(send, 200, orjson.dumps(doc))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _error(send: Send, status: int, message: str) -> None:
    await respond(send, status, orjson.dumps({"error": message}))


async def _refuse(send: Send, denied: tuple[int, str]) -> None:
    status, message = denied
    headers = [(b"www-authenticate", b"Bearer")] if status == 401 else None
    await respond(send, status, orjson.dumps({"error": message}), headers=headers)
