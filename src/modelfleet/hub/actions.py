"""What a schedule or a trigger does when it fires: an :class:`Action`.

Three kinds, one class each, behind one small interface (a later kind is one more class
here and one more member of :data:`~modelfleet.api.schedules.ActionIn`):

- ``federated`` starts a federated job from a stored spec through the coordinator, with a
  job id derived from the fire (``s-<schedule>-<slot>``): the coordinator returns the
  existing job for a known id, so running the action again for the same fire (after the
  hub died mid-action) starts no second job — it is *rerunnable*;
- ``hook`` POSTs a JSON body signed like a webhook (``X-Modelfleet-Signature``, the same
  :func:`~modelfleet.hub.webhooks.sign`) to an http(s) URL, for training that runs
  outside the fleet. Not rerunnable: a POST whose answer was lost may have been taken, so
  a hook interrupted by a crash is recorded ``interrupted``, never sent twice; receivers
  may still de-duplicate by ``X-Modelfleet-Fire-Id``;
- ``pipeline`` starts a run of a pipeline (train -> evaluate -> move an alias,
  hub/pipelines.py) with a run id derived from the fire: rerunnable like ``federated``.

An action never raises for its own failure: it answers an :class:`Outcome`, which the
caller records on the fire's row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import httpx

from modelfleet._version import __version__
from modelfleet.api.pipelines import PipelineActionIn
from modelfleet.api.schedules import ActionIn, FederatedActionIn, HookActionIn
from modelfleet.errors import InvalidInput, ModelfleetError, NotFound
from modelfleet.federation.jobs import JOB_ID, JobConfig
from modelfleet.hub.federation.coordinator import Coordinator
from modelfleet.hub.pipelines import Pipelines
from modelfleet.hub.registry import Registry
from modelfleet.hub.webhooks import check_url, shown_url, sign
from modelfleet.refs import check_name, parse_ref

log = logging.getLogger("modelfleet.hub.actions")

MAX_PAYLOAD_BYTES = 4096


@dataclass(frozen=True)
class Firing:
    """The fire an action runs for: a schedule's slot or a trigger's fire."""

    kind: str  # schedule | trigger
    name: str
    slot: datetime
    fire_id: int
    reason: str = ""

    @property
    def key(self) -> str:
        """Names the fire itself: ``schedule/<name>/<slot-iso>``."""
        return f"{self.kind}/{self.name}/{self.slot.isoformat()}"


@dataclass(frozen=True)
class Outcome:
    """What an action did: ``ok``, what it started (``job``) and a line about it."""

    ok: bool
    job: str | None
    detail: str


class Action(ABC):
    """One kind of action, built from its stored document."""

    kind: ClassVar[str]
    #: Whether running it again for the same fire is harmless (see the module docstring).
    rerunnable: ClassVar[bool]

    @abstractmethod
    def run(self, firing: Firing) -> Outcome:
        """Do it; never raises for the action's own failure."""

    @abstractmethod
    def public(self) -> dict[str, Any]:
        """The document as shown: never a secret."""


class FederatedAction(Action):
    kind = "federated"
    rerunnable = True

    def __init__(self, federation: Coordinator, job: dict[str, Any]) -> None:
        self.federation = federation
        self.job = job

    def run(self, firing: Firing) -> Outcome:
        job_id = job_id_for(firing)
        try:
            config = JobConfig.parse({**self.job, "id": job_id})
            job = self.federation.start_job(config, f"{firing.kind}:{firing.name}")
        except ModelfleetError as exc:
            return Outcome(False, None, f"federated job not started: {exc.message}"[:2000])
        return Outcome(True, job.id, f"federated job {job.id} {job.state}: {job.message}"[:2000])

    def public(self) -> dict[str, Any]:
        return {"kind": self.kind, "job": self.job}


class HookAction(Action):
    kind = "hook"
    rerunnable = False

    def __init__(self, doc: dict[str, Any]) -> None:
        self.url = str(doc["url"])
        self.secret = str(doc["secret"])
        self.payload = dict(doc.get("payload") or {})
        self.timeout_s = float(doc.get("timeout_s", 10.0))

    def run(self, firing: Firing) -> Outcome:
        body = json.dumps(
            {
                "kind": firing.kind,
                "name": firing.name,
                "slot": firing.slot.isoformat(),
                "fire_id": firing.fire_id,
                "reason": firing.reason,
                "payload": self.payload,
            },
            separators=(",", ":"),
        ).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"modelfleet-hub/{__version__}",
            "X-Modelfleet-Event-Type": f"{firing.kind}.fired",
            "X-Modelfleet-Fire-Id": firing.key,
            "X-Modelfleet-Timestamp": timestamp,
            "X-Modelfleet-Signature": sign(self.secret, timestamp, body),
        }
        timeout = httpx.Timeout(self.timeout_s, connect=min(3.0, self.timeout_s))
        try:
            with httpx.Client(timeout=timeout, follow_redirects=False) as client:
                response = client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            # The exception's text may quote the URL: only its type and the origin are told.
            return Outcome(
                False, None, f"hook {shown_url(self.url)} not delivered: {type(exc).__name__}"
            )
        status = f"HTTP {response.status_code}"
        if 200 <= response.status_code < 300:
            return Outcome(True, status, f"hook {shown_url(self.url)} answered {status}")
        return Outcome(False, status, f"hook {shown_url(self.url)} answered {status}")

    def public(self) -> dict[str, Any]:
        """What a viewer sees: the hook's origin only (a hook URL may carry its secret in
        the path, as Slack's do)."""
        return {
            "kind": self.kind,
            "url": shown_url(self.url),
            "payload": self.payload,
            "timeout_s": self.timeout_s,
        }


class PipelineAction(Action):
    """Starts a run of a pipeline (hub/pipelines.py) whose id is derived from the fire
    (``s-<schedule>-<slot>``, as a federated action's job): the store answers a known run
    id with that run, so running it again for the same fire starts nothing new."""

    kind = "pipeline"
    rerunnable = True

    def __init__(self, pipelines: Pipelines | None, pipeline: str) -> None:
        self.pipelines = pipelines
        self.pipeline = pipeline

    def run(self, firing: Firing) -> Outcome:
        if self.pipelines is None:
            return Outcome(False, None, "pipelines are not available on this hub")
        try:
            run = self.pipelines.start_run(
                self.pipeline, actor=f"{firing.kind}:{firing.name}", run_id=job_id_for(firing)
            )
        except ModelfleetError as exc:
            return Outcome(False, None, f"pipeline run not started: {exc.message}"[:2000])
        return Outcome(
            True, run.id, f"pipeline {self.pipeline} run {run.id} {run.state}: {run.message}"[:2000]
        )

    def public(self) -> dict[str, Any]:
        return {"kind": self.kind, "pipeline": self.pipeline}


def job_id_for(firing: Firing) -> str:
    """``s-<name>-<slot>`` (``t-`` for a trigger), within the job id rules (64 chars)."""
    stamp = firing.slot.strftime("%Y%m%dT%H%M%SZ")
    job_id = f"{firing.kind[0]}-{firing.name}-{stamp}"
    if not JOB_ID.match(job_id):
        digest = hashlib.sha256(firing.key.encode()).hexdigest()[:10]
        job_id = f"{firing.kind[0]}-{firing.name[:30]}-{stamp}-{digest}"
    return job_id


class Actions:
    """Checks an action as submitted and builds the :class:`Action` of a stored one."""

    def __init__(
        self, federation: Coordinator, registry: Registry, pipelines: Pipelines | None = None
    ) -> None:
        self.federation = federation
        self.registry = registry
        #: Starts the runs of ``pipeline`` actions (set by the hub's wiring).
        self.pipelines = pipelines

    def check(
        self, spec: ActionIn, previous: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], str | None]:
        """The document to store, and a hook secret the hub made (to show once).

        ``InvalidInput`` naming the fault: a job spec that does not parse or names an id
        or an unknown model, a URL that is not http(s), a payload above 4 KiB. A hook
        without a secret keeps the secret of the ``previous`` hook it replaces.
        """
        if isinstance(spec, FederatedActionIn):
            if "id" in spec.job:
                raise InvalidInput(
                    "a scheduled federated job must not name an id: each fire gets its own "
                    "(s-<schedule>-<slot>)"
                )
            config = JobConfig.parse(spec.job)
            try:
                self.registry.resolve(parse_ref(config.model))
            except NotFound as exc:
                raise InvalidInput(f"unknown model in the job spec: {exc.message}") from exc
            return {"kind": "federated", "job": spec.job}, None
        if isinstance(spec, HookActionIn):
            try:
                url = check_url(spec.url)
            except InvalidInput as exc:
                raise InvalidInput(exc.message.replace("webhook URL", "hook URL")) from exc
            size = len(json.dumps(spec.payload))
            if size > MAX_PAYLOAD_BYTES:
                raise InvalidInput(f"hook payload is {size} bytes; at most {MAX_PAYLOAD_BYTES}")
            made: str | None = None
            secret = spec.secret
            if secret is None and previous and previous.get("kind") == "hook":
                secret = str(previous["secret"])
            if secret is None:
                secret = made = secrets.token_urlsafe(32)
            doc = {
                "kind": "hook",
                "url": url,
                "secret": secret,
                "payload": spec.payload,
                "timeout_s": spec.timeout_s,
            }
            return doc, made
        if isinstance(spec, PipelineActionIn):
            name = check_name(spec.pipeline, "pipeline name")
            if self.pipelines is None:
                raise InvalidInput("pipelines are not available on this hub")
            try:
                self.pipelines.get(name)
            except NotFound as exc:
                raise InvalidInput(f"unknown pipeline in the action: {exc.message}") from exc
            return {"kind": "pipeline", "pipeline": name}, None
        raise InvalidInput(f"unknown action {spec!r}")

    def build(self, doc: dict[str, Any]) -> Action:
        """The action of a stored document."""
        kind = doc.get("kind")
        if kind == "federated":
            return FederatedAction(self.federation, dict(doc["job"]))
        if kind == "hook":
            return HookAction(doc)
        if kind == "pipeline":
            return PipelineAction(self.pipelines, str(doc["pipeline"]))
        raise InvalidInput(f"unknown action kind {kind!r}")

    def run(self, doc: dict[str, Any], firing: Firing) -> Outcome:
        """Run the stored action for ``firing``; an action's bug is its outcome (recorded on
        the fire row) rather than the end of the schedules' or triggers' pass."""
        try:
            return self.build(doc).run(firing)
        except Exception as exc:
            log.exception("%s %s: action failed", firing.kind, firing.name)
            return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:2000])


#: The outcome of a fire whose action was interrupted (the hub stopped while it ran) and may
#: not run again: a hook is sent at most once.
INTERRUPTED = Outcome(
    False,
    None,
    "interrupted: the hub stopped while the action ran; not run again (a hook is sent at "
    "most once)",
)
