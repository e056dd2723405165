"""``modelfleet.Client`` / ``AsyncClient``: inference at the best permitted site.

::

    client = modelfleet.Client(hub_url="http://hub:8700", token=INFER_TOKEN, data_region="EU")
    outputs = client.infer("pump", {"X": x})          # {"Y": np.ndarray}
    outputs = client.infer("pump", x, data_region="UK", deadline_s=0.5)

    client = modelfleet.Client(sites=[{"name": "eu-1", "url": "http://10.0.0.5:8800",
                                       "labels": {"jurisdiction": "EU"}}], data_region="EU")

With a hub, the fleet's residency policies come with its directory and are cached on disk
with it; ``residency=`` rules only narrow them (``routing/residency.py``).

Site choice, retries and hedging are :class:`~modelfleet.routing.router.Router`'s; this module
only encodes Open Inference Protocol requests (binary tensors both ways) and decodes answers.
The async client lives on the caller's event loop; the sync client runs the same engine on a
private loop thread, so both behave identically (and the sync one is thread-safe).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import orjson

from modelfleet.errors import InvalidInput, ModelfleetError, NotFound, SiteError, TensorError
from modelfleet.oip.codec import decode_response, encode_request, to_numpy_input
from modelfleet.oip.headers import INFERENCE_HEADER_LENGTH
from modelfleet.oip.types import InferInput, InferRequest, RequestedOutput
from modelfleet.pki.tls import TlsFiles
from modelfleet.routing.directory import Site, SiteDirectory
from modelfleet.routing.residency import ResidencyRules, check_data_region
from modelfleet.routing.router import Router, RoutingOptions
from modelfleet.settings import ClientSettings

__all__ = ["AsyncClient", "Client", "InferResult"]

T = TypeVar("T")
Inputs = Mapping[str, npt.ArrayLike] | npt.NDArray[Any] | Iterable[InferInput]


@dataclass
class InferResult:
    """Outputs plus where and how they were obtained."""

    outputs: dict[str, npt.NDArray[Any]]
    model_name: str
    model_version: str | None
    parameters: dict[str, Any]
    site: str
    request_id: str
    attempts: int
    hedged: bool
    latency_s: float


class AsyncClient:
    """Async inference client; see the module docstring. Use ``async with`` or ``aclose()``."""

    def __init__(
        self,
        hub_url: str | None = None,
        token: str | None = None,
        *,
        sites: Iterable[Site | Mapping[str, Any]] | None = None,
        data_region: str | None = None,
        residency: ResidencyRules | Mapping[str, Iterable[str]] | None = None,
        policies: Iterable[Mapping[str, Any]] | None = None,
        cache_path: str | Path | None = None,
        deadline_s: float = 10.0,
        hedge: bool = True,
        options: RoutingOptions | None = None,
        ca_file: str | Path | None = None,
    ) -> None:
        if sites is not None and hub_url is not None:
            raise InvalidInput("give hub_url or sites, not both")
        # Checked before the directory is touched: a bad default fails at once, offline.
        region = None if data_region is None else check_data_region(data_region)
        env = ClientSettings()
        # One infer token serves both: the directory from the hub and the sites' /v2.
        token = token if token is not None else env.token
        if sites is None:
            hub_url = hub_url or env.hub_url
        # One CA for the hub and the sites: the fleet's (https sites must present a
        # certificate naming the site chosen).
        tls = TlsFiles(Path(ca_file) if ca_file is not None else env.ca_file)
        directory = SiteDirectory(
            hub_url=hub_url,
            token=token,
            sites=list(sites) if sites is not None else None,
            policies=list(policies) if policies is not None else None,
            cache_path=cache_path,
            tls=tls,
        )
        rules = residency if isinstance(residency, ResidencyRules) else ResidencyRules(residency)
        opts = options or RoutingOptions(deadline_s=deadline_s, hedge=hedge)
        self.router = Router(directory, rules=rules, options=opts, tls=tls, token=token)
        self.data_region = region
        self._input_names: dict[str, str] = {}

    async def __aenter__(self) -> AsyncClient:
        await self.router.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.router.aclose()

    @property
    def sites(self) -> list[Site]:
        return self.router.sites

    async def infer(
        self,
        model: str,
        inputs: Inputs,
        *,
        data_region: str | None = None,
        deadline_s: float | None = None,
        version: int | None = None,
        outputs: Iterable[str] | None = None,
        request_id: str | None = None,
    ) -> dict[str, npt.NDArray[Any]]:
        """Run ``model`` on ``inputs`` (name -> array, or one array for a one-input model)."""
        result = await self.infer_detailed(
            model,
            inputs,
            data_region=data_region,
            deadline_s=deadline_s,
            version=version,
            outputs=outputs,
            request_id=request_id,
        )
        return result.outputs

    async def infer_detailed(
        self,
        model: str,
        inputs: Inputs,
        *,
        data_region: str | None = None,
        deadline_s: float | None = None,
        version: int | None = None,
        outputs: Iterable[str] | None = None,
        request_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> InferResult:
        """Like :meth:`infer`, with the serving site, version, attempts and latency."""
        region = self._region(data_region)
        tensors = await self._tensors(model, inputs, region, version)
        request = InferRequest(
            id=request_id,
            inputs=tensors,
            outputs=[RequestedOutput(n, True) for n in outputs] if outputs else None,
            parameters={**(parameters or {}), "binary_data_output": True},
        )
        try:
            body, header_length = encode_request(request, binary=True)
        except TensorError as exc:
            raise InvalidInput(exc.message) from exc
        headers = {"content-type": "application/octet-stream"}
        if header_length is not None:
            headers[INFERENCE_HEADER_LENGTH] = str(header_length)
        routed = await self.router.send(
            model,
            _path(model, version, "infer"),
            data_region=region,
            body=body,
            headers=headers,
            version=version,
            deadline_s=deadline_s,
            request_id=request_id,
        )
        response = routed.response
        if response.status != 200:
            raise _site_error(response.status, response.body, routed.site.name)
        header = response.headers.get(INFERENCE_HEADER_LENGTH)
        decoded = decode_response(response.body, int(header) if header else None)
        return InferResult(
            outputs={o.name: o.data for o in decoded.outputs},
            model_name=decoded.model_name,
            model_version=decoded.model_version,
            parameters=decoded.parameters,
            site=routed.site.name,
            request_id=routed.request_id,
            attempts=routed.attempts,
            hedged=routed.hedged,
            latency_s=routed.latency_s,
        )

    async def metadata(
        self, model: str, *, data_region: str | None = None, version: int | None = None
    ) -> dict[str, Any]:
        """The model's OIP metadata (inputs, outputs) from a permitted site."""
        routed = await self.router.send(
            model,
            _path(model, version, ""),
            method="GET",
            data_region=self._region(data_region),
            version=version,
        )
        if routed.response.status != 200:
            raise _site_error(routed.response.status, routed.response.body, routed.site.name)
        doc: dict[str, Any] = orjson.loads(routed.response.body)
        return doc

    def _region(self, data_region: str | None) -> str:
        region = data_region or self.data_region
        if not region:
            raise InvalidInput(
                "no data region: pass data_region='EU' (per request or to the client), or "
                "'*' for data without residency constraints"
            )
        return check_data_region(region)

    async def _tensors(
        self, model: str, inputs: Inputs, region: str, version: int | None
    ) -> list[InferInput]:
        if isinstance(inputs, np.ndarray):
            name = self._input_names.get(model)
            if name is None:
                meta = await self.metadata(model, data_region=region, version=version)
                specs = meta.get("inputs") or []
                if len(specs) != 1:
                    raise InvalidInput(
                        f"model {model!r} has {len(specs)} inputs: pass a mapping name -> array"
                    )
                name = self._input_names[model] = str(specs[0]["name"])
            return [to_numpy_input(inputs, name)]
        if isinstance(inputs, Mapping):
            return [to_numpy_input(np.asarray(v), str(k)) for k, v in inputs.items()]
        return list(inputs)


class Client:
    """Synchronous, thread-safe twin of :class:`AsyncClient`: the same arguments, names and
    defaults, spelled out here so editors and type checkers see them.

    ``hub_url``/``token`` (or ``sites``, a static list) say where the site directory comes
    from; ``token`` (default ``$MODELFLEET_TOKEN``) is an ``infer`` token, which reads the
    directory and is what every site checks (``token create --role infer``);
    ``data_region`` is the default region of every request. Where a region's data may go is
    the fleet's residency policies (``policy apply -f``), which come with the hub's
    directory; ``residency`` adds local rules region -> jurisdictions that can only narrow
    them (docs/residency.md), and ``policies`` gives the policy documents themselves for a
    static ``sites`` list (no hub). ``cache_path`` is the file the directory (sites and
    policies) is kept in for a hub outage: default ``$MODELFLEET_CACHE_DIR`` or
    ``~/.cache/modelfleet/directory-<hash of hub URL>.json``
    (:func:`~modelfleet.routing.directory.default_cache_path`); ``deadline_s`` and
    ``hedge`` the routing defaults (or a whole
    :class:`RoutingOptions` as ``options``); ``ca_file`` the fleet CA that ``https`` hubs
    and sites are verified against (default ``$MODELFLEET_CA_FILE``, else the system's
    roots). The async client runs on a private event
    loop in a daemon thread, so calls block the caller only.
    """

    def __init__(
        self,
        hub_url: str | None = None,
        token: str | None = None,
        *,
        sites: Iterable[Site | Mapping[str, Any]] | None = None,
        data_region: str | None = None,
        residency: ResidencyRules | Mapping[str, Iterable[str]] | None = None,
        policies: Iterable[Mapping[str, Any]] | None = None,
        cache_path: str | Path | None = None,
        deadline_s: float = 10.0,
        hedge: bool = True,
        options: RoutingOptions | None = None,
        ca_file: str | Path | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="modelfleet-client", daemon=True
        )
        self._thread.start()
        self._closed = False
        try:
            self._async = self._run(
                _make(
                    lambda: AsyncClient(
                        hub_url,
                        token,
                        sites=sites,
                        data_region=data_region,
                        residency=residency,
                        policies=policies,
                        cache_path=cache_path,
                        deadline_s=deadline_s,
                        hedge=hedge,
                        options=options,
                        ca_file=ca_file,
                    )
                )
            )
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            raise InvalidInput("the client is closed")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    @property
    def router(self) -> Router:
        return self._async.router

    @property
    def sites(self) -> list[Site]:
        return self._async.sites

    def infer(
        self,
        model: str,
        inputs: Inputs,
        *,
        data_region: str | None = None,
        deadline_s: float | None = None,
        version: int | None = None,
        outputs: Iterable[str] | None = None,
        request_id: str | None = None,
    ) -> dict[str, npt.NDArray[Any]]:
        """See :meth:`AsyncClient.infer`."""
        return self._run(
            self._async.infer(
                model,
                inputs,
                data_region=data_region,
                deadline_s=deadline_s,
                version=version,
                outputs=outputs,
                request_id=request_id,
            )
        )

    def infer_detailed(
        self,
        model: str,
        inputs: Inputs,
        *,
        data_region: str | None = None,
        deadline_s: float | None = None,
        version: int | None = None,
        outputs: Iterable[str] | None = None,
        request_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> InferResult:
        """See :meth:`AsyncClient.infer_detailed`."""
        return self._run(
            self._async.infer_detailed(
                model,
                inputs,
                data_region=data_region,
                deadline_s=deadline_s,
                version=version,
                outputs=outputs,
                request_id=request_id,
                parameters=parameters,
            )
        )

    def metadata(
        self, model: str, *, data_region: str | None = None, version: int | None = None
    ) -> dict[str, Any]:
        """See :meth:`AsyncClient.metadata`."""
        return self._run(self._async.metadata(model, data_region=data_region, version=version))

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._run(self._async.aclose())
        finally:
            self._closed = True
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


async def _make(build: Callable[[], AsyncClient]) -> AsyncClient:
    """Build and start the async client on the private loop (its router binds to it)."""
    client = build()
    await client.router.start()
    return client


def _path(model: str, version: int | None, action: str) -> str:
    path = f"/v2/models/{model}"
    if version is not None:
        path += f"/versions/{version}"
    return f"{path}/{action}" if action else path


def _site_error(status: int, body: bytes, site: str) -> ModelfleetError:
    try:
        message = str(orjson.loads(body)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = body[:300].decode("utf-8", "replace")
    text = f"site {site} answered {status}: {message}"
    if status == 404:
        return NotFound(text)
    return SiteError(text)
