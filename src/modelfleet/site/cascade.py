"""Hybrid cloud-edge cascade: a small model answers at the edge, hard cases go to the cloud.

Per model, an :class:`EscalationRule` says when the edge's own answer is not good enough:

- ``threshold``: the maximum class probability of some row of the local answer is below it
  (the probabilities are the output named ``output``, else the first floating-point output
  whose last dimension is at least 2);
- ``always``: every request escalates (a heavy model lives only in the cloud, the edge model
  is the fallback).

An escalated request is re-sent, unchanged, to ``target`` (a cloud site or a gateway; with a
gateway, ``data_region`` is sent in ``x-modelfleet-data-region`` so residency still holds),
optionally to another model name (``target_model``). The cloud's answer is returned with
``parameters: {"escalated": true}``. When the cloud is unreachable, errs, or does not answer
within ``deadline_s``, the local answer is returned with ``parameters: {"degraded": true}``:
the edge never fails because the cloud is away.

A whole request escalates when any of its rows is low-confidence (one round trip, one answer);
callers that want per-row escalation send rows separately.

**Integration point** (``site/server.py``, after the local model ran and before the response
is encoded)::

    response = InferResponse(...)                  # the local answer
    if self.cascade is not None and self.cascade.applies(model.name):
        response = await self.cascade.maybe_escalate(model.name, req, response)
    body, header = encode_response(response, binary_outputs=...)

``Cascade.from_config`` reads the site's cascade section (YAML/JSON)::

    target: https://cloud-site:8800         # or the gateway's URL
    target_site: cloud-eu                   # whom the certificate must name (or target_gateway)
    deadline_s: 0.5
    data_region: EU                         # sent to a gateway target
    token: mf_...                           # an infer token for the target (else
                                            # $MODELFLEET_CASCADE_TOKEN; over TLS the
                                            # site's own certificate is accepted too)
    models:
      defects: {threshold: 0.7, output: probabilities}
      captioner: {always: true, target_model: captioner-large}

Over HTTPS the target is verified against the fleet CA the site pinned, and its certificate
must name the site (``target_site``) or gateway (``target_gateway``) the config chose: the
same check the router makes (:class:`~modelfleet.transport.client.Origin` with an identity),
so a URL that now leads to another site is refused before the request is sent (the answer
is then the degraded local one). An ``https`` target without either name is refused at
start-up: verifying only that *some* fleet member answers would let any site take over.

Counters (``escalations``, ``cloud_answers``, ``degraded``, per model) are Prometheus counters
registered in the registry passed in (the server's), so they appear on the site's
``/metrics`` and in the telemetry the agent ships.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from modelfleet.errors import InvalidInput, ModelfleetError
from modelfleet.oip.codec import decode_response, encode_request
from modelfleet.oip.headers import (
    CASCADE_HEADER,
    INFERENCE_HEADER_LENGTH,
    REGION_HEADER,
    REQUEST_ID_HEADER,
)
from modelfleet.oip.types import InferRequest, InferResponse, RequestedOutput
from modelfleet.pki.identity import Identity, gateway_identity, site_identity
from modelfleet.pki.tls import TlsFiles
from modelfleet.routing.residency import check_data_region
from modelfleet.transport.client import Origin, Pool

__all__ = ["Cascade", "CascadeStats", "EscalationRule"]


@dataclass(frozen=True)
class EscalationRule:
    """When a model's local answer escalates; see the module docstring."""

    threshold: float | None = None
    always: bool = False
    output: str | None = None
    target_model: str | None = None

    def __post_init__(self) -> None:
        if self.threshold is None and not self.always:
            raise InvalidInput("an escalation rule needs a threshold or always: true")
        if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
            raise InvalidInput(f"escalation threshold {self.threshold} must be in (0, 1]")

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> EscalationRule:
        unknown = set(doc) - {"threshold", "always", "output", "target_model"}
        if unknown:
            raise InvalidInput(f"unknown escalation rule keys: {', '.join(sorted(unknown))}")
        threshold = doc.get("threshold")
        return cls(
            threshold=float(threshold) if threshold is not None else None,
            always=bool(doc.get("always", False)),
            output=doc.get("output"),
            target_model=doc.get("target_model"),
        )

    def wants(self, local: InferResponse) -> bool:
        if self.always:
            return True
        probs = _probabilities(local, self.output)
        if probs is None or probs.size == 0 or self.threshold is None:
            return False
        rows = probs.reshape(-1, probs.shape[-1])
        return bool((rows.max(axis=1) < self.threshold).any())


@dataclass
class CascadeStats:
    """Plain counts, next to the Prometheus counters, for tests and the agent's reports."""

    escalations: dict[str, int] = field(default_factory=dict)
    cloud_answers: dict[str, int] = field(default_factory=dict)
    degraded: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def bump(counts: dict[str, int], model: str) -> None:
        counts[model] = counts.get(model, 0) + 1


class Cascade:
    """Escalation of low-confidence (or heavy-model) requests to a cloud site or gateway."""

    def __init__(
        self,
        target: str,
        rules: Mapping[str, EscalationRule],
        *,
        deadline_s: float = 0.5,
        data_region: str | None = None,
        registry: CollectorRegistry | None = None,
        token: str | None = None,
        identity: Identity | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        """``token``: the infer token sent to the cloud site or gateway (which require a
        credential); ``identity``: whom an ``https`` target's certificate must name
        (required for one); ``tls``: the fleet CA to verify it with, and this site's own
        certificate."""
        if target.startswith("https://") and identity is None:
            raise InvalidInput(
                f"cascade target {target} is HTTPS: name whom it must be with target_site: "
                "NAME (a cloud site) or target_gateway: NAME (a gateway)"
            )
        self.origin = Origin.parse(target, identity)
        self.token = token
        self.target = target
        self.rules = dict(rules)
        if deadline_s <= 0:
            raise InvalidInput("cascade deadline_s must be positive")
        self.deadline_s = deadline_s
        self.data_region = data_region
        self.stats = CascadeStats()
        self._pool = Pool(connect_timeout_s=deadline_s, tls=tls)
        registry = registry if registry is not None else CollectorRegistry()
        self._escalations = Counter(
            "modelfleet_site_cascade_escalations_total",
            "Requests escalated to the cloud, by model",
            ["model"],
            registry=registry,
        )
        self._degraded = Counter(
            "modelfleet_site_cascade_degraded_total",
            "Escalations answered locally (cloud unreachable, failing or too slow), by model",
            ["model"],
            registry=registry,
        )

    @classmethod
    def from_config(
        cls,
        doc: Mapping[str, Any],
        *,
        registry: CollectorRegistry | None = None,
        tls: TlsFiles | None = None,
    ) -> Cascade:
        target = doc.get("target")
        if not isinstance(target, str):
            raise InvalidInput("cascade config needs 'target': the cloud site's or gateway's URL")
        site, gateway = doc.get("target_site"), doc.get("target_gateway")
        if site is not None and gateway is not None:
            raise InvalidInput("cascade config: give target_site or target_gateway, not both")
        identity: Identity | None = None
        if site is not None:
            identity = site_identity(str(site))
        elif gateway is not None:
            identity = gateway_identity(str(gateway))
        models = doc.get("models") or {}
        if not isinstance(models, Mapping):
            raise InvalidInput("cascade 'models' must map a model name to a rule")
        rules = {str(k): EscalationRule.from_dict(v) for k, v in models.items()}
        return cls(
            target,
            rules,
            deadline_s=float(doc.get("deadline_s", 0.5)),
            # The same grammar as every other data region: it becomes a header.
            data_region=(
                check_data_region(str(doc["data_region"]), "cascade data_region")
                if doc.get("data_region") is not None
                else None
            ),
            registry=registry,
            # An infer token for the target: the file's, else $MODELFLEET_CASCADE_TOKEN.
            token=doc.get("token") or os.environ.get("MODELFLEET_CASCADE_TOKEN") or None,
            identity=identity,
            tls=tls,
        )

    def applies(self, model: str) -> bool:
        return model in self.rules

    async def maybe_escalate(
        self, model: str, request: InferRequest, local: InferResponse
    ) -> InferResponse:
        """The cloud's answer when the rule says so and the cloud answers in time; else the
        local answer (marked ``degraded`` when an escalation failed). Never raises for cloud
        trouble."""
        rule = self.rules.get(model)
        if rule is None or request.parameters.get("cascade") is False or not rule.wants(local):
            return local
        self.stats.bump(self.stats.escalations, model)
        self._escalations.labels(model).inc()
        try:
            async with asyncio.timeout(self.deadline_s):
                answer = await self._forward(rule.target_model or model, request)
        except (TimeoutError, ModelfleetError, OSError):
            return self._degrade(model, local)
        if answer is None:
            return self._degrade(model, local)
        self.stats.bump(self.stats.cloud_answers, model)
        answer.id = local.id
        answer.parameters = {**answer.parameters, "escalated": True}
        return answer

    def _degrade(self, model: str, local: InferResponse) -> InferResponse:
        self.stats.bump(self.stats.degraded, model)
        self._degraded.labels(model).inc()
        local.parameters = {**local.parameters, "degraded": True}
        return local

    async def _forward(self, model: str, request: InferRequest) -> InferResponse | None:
        outgoing = InferRequest(
            id=request.id,
            inputs=request.inputs,
            outputs=[RequestedOutput(o.name, True, o.parameters) for o in request.outputs]
            if request.outputs
            else None,
            parameters={**request.parameters, "binary_data_output": True, "cascade": False},
        )
        body, header_length = encode_request(outgoing, binary=True)
        headers = {"content-type": "application/octet-stream", CASCADE_HEADER: "1"}
        if header_length is not None:
            headers[INFERENCE_HEADER_LENGTH] = str(header_length)
        # A fresh id for this outbound call, never the client's: the client's JSON "id" is
        # any text (a CR/LF in it once became injected headers here); it still travels
        # inside the body, where the cloud answers with it.
        headers[REQUEST_ID_HEADER] = uuid.uuid4().hex
        if self.data_region:
            headers[REGION_HEADER] = self.data_region
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        response = await self._pool.request(
            self.origin, "POST", f"/v2/models/{model}/infer", body, headers
        )
        if response.status != 200:
            return None
        header = response.headers.get(INFERENCE_HEADER_LENGTH)
        return decode_response(response.body, int(header) if header else None)

    def close(self) -> None:
        self._pool.close()


def _probabilities(local: InferResponse, name: str | None) -> np.ndarray[Any, Any] | None:
    for out in local.outputs:
        if name is not None:
            if out.name == name:
                return np.asarray(out.data, dtype=np.float64)
            continue
        if out.datatype in ("FP16", "FP32", "FP64") and len(out.shape) >= 1 and out.shape[-1] >= 2:
            return np.asarray(out.data, dtype=np.float64)
    return None
