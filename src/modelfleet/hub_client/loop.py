"""The closed loop's calls of :class:`~modelfleet.hub_client.HubClient`: events and
webhooks, evaluations, schedules and triggers, pipelines (docs/events.md,
docs/evaluations.md, docs/schedules.md, docs/pipelines.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from modelfleet.api.evaluations import Evaluation
from modelfleet.api.events import DeadLetter, Event, Redelivered, Webhook, WebhookCreated
from modelfleet.api.pipelines import Pipeline, PipelineRun
from modelfleet.api.schedules import Fire, Schedule, ScheduleSaved, Trigger, TriggerSaved
from modelfleet.hub_client.base import HubClientBase
from modelfleet.transport.session import raise_for_response, transport_error


class LoopCalls(HubClientBase):
    """Events, webhooks, evaluations, schedules, triggers and pipelines."""

    # --- events and webhooks ------------------------------------------------------------

    def list_events(
        self, *, after: int = 0, types: list[str] | None = None, limit: int = 100
    ) -> list[Event]:
        """Events with an id above ``after``, oldest first (``types``: exact, ``x.*``)."""
        params: list[tuple[str, Any]] = [("after", after), ("limit", limit)]
        params += [("type", t) for t in types or []]
        return self._many(Event, "GET", "/api/v1/events", params=params)

    def stream_events(
        self,
        *,
        after: int | None = None,
        types: list[str] | None = None,
        read_timeout: float = 60.0,
    ) -> Iterator[Event]:
        """Events as the hub records them (server-sent events), from after ``after`` (None:
        from now). Ends when the hub ends the stream (it is stopping); a broken connection
        raises :class:`HubUnreachable`. Reconnect with ``after`` = the last id seen."""
        params: list[tuple[str, Any]] = [("type", t) for t in types or []]
        headers = {"Accept": "text/event-stream"}
        if after is not None:
            headers["Last-Event-ID"] = str(after)
        timeout = httpx.Timeout(10.0, read=read_timeout)
        try:
            with self._session._client().stream(
                "GET", "/api/v1/events/stream", params=params, headers=headers, timeout=timeout
            ) as response:
                if not response.is_success:
                    response.read()
                    raise_for_response(response)
                data: list[str] = []
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        yield Event.model_validate(json.loads("\n".join(data)))
                        data = []
        except httpx.TransportError as exc:
            raise transport_error(self.url, exc, "event stream:") from exc

    def list_webhooks(self) -> list[Webhook]:
        return self._many(Webhook, "GET", "/api/v1/webhooks")

    def create_webhook(
        self,
        url: str,
        events: list[str],
        *,
        format: str = "json",
        secret: str | None = None,
        description: str = "",
        max_attempts: int = 8,
    ) -> WebhookCreated:
        """A target for ``events`` (``rollout.*``, ``*``); the answer holds its secret once."""
        body: dict[str, Any] = {
            "url": url,
            "events": events,
            "format": format,
            "description": description,
            "max_attempts": max_attempts,
        }
        if secret is not None:
            body["secret"] = secret
        return self._one(WebhookCreated, "POST", "/api/v1/webhooks", json=body)

    def remove_webhook(self, webhook_id: str) -> None:
        self.request("DELETE", f"/api/v1/webhooks/{webhook_id}")

    def list_dead_letters(self, webhook_id: str, limit: int = 100) -> list[DeadLetter]:
        return self._many(
            DeadLetter,
            "GET",
            f"/api/v1/webhooks/{webhook_id}/dead-letters",
            params={"limit": limit},
        )

    def redeliver_webhook(self, webhook_id: str, event_ids: list[int] | None = None) -> Redelivered:
        """Queue a target's dead letters (all, or ``event_ids``) again."""
        return self._one(
            Redelivered,
            "POST",
            f"/api/v1/webhooks/{webhook_id}/redeliver",
            json={"event_ids": event_ids},
        )

    # --- evaluations (docs/evaluations.md) ----------------------------------------------

    def start_evaluation(self, request: dict[str, Any]) -> Evaluation:
        """Start an evaluation: ``model``, ``versions`` (2 to 8 aliases or numbers),
        ``selector`` and optionally ``min_samples``, ``metric``, ``data``, ``rows``,
        ``deadline_s`` (see :class:`modelfleet.api.evaluations.EvaluationIn`)."""
        return self._one(Evaluation, "POST", "/api/v1/evaluations", json=request)

    def get_evaluation(self, evaluation_id: str) -> Evaluation:
        return self._one(Evaluation, "GET", f"/api/v1/evaluations/{evaluation_id}")

    def list_evaluations(self, model: str | None = None) -> list[Evaluation]:
        params = {"model": model} if model else {}
        return self._many(Evaluation, "GET", "/api/v1/evaluations", params=params)

    # --- schedules and triggers ---------------------------------------------------------

    def list_schedules(self) -> list[Schedule]:
        return self._many(Schedule, "GET", "/api/v1/schedules")

    def get_schedule(self, name: str) -> Schedule:
        return self._one(Schedule, "GET", f"/api/v1/schedules/{name}")

    def set_schedule(self, name: str, schedule: dict[str, Any]) -> ScheduleSaved:
        """Create or replace a schedule (``ScheduleIn``: cron, timezone, action...); the
        answer holds a hook secret the hub made, once."""
        return self._one(ScheduleSaved, "PUT", f"/api/v1/schedules/{name}", json=schedule)

    def remove_schedule(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/schedules/{name}")

    def list_schedule_fires(self, name: str, limit: int = 100) -> list[Fire]:
        """A schedule's slots (fired, failed, missed, interrupted), newest first."""
        return self._many(Fire, "GET", f"/api/v1/schedules/{name}/fires", params={"limit": limit})

    def list_triggers(self) -> list[Trigger]:
        return self._many(Trigger, "GET", "/api/v1/triggers")

    def get_trigger(self, name: str) -> Trigger:
        return self._one(Trigger, "GET", f"/api/v1/triggers/{name}")

    def set_trigger(self, name: str, trigger: dict[str, Any]) -> TriggerSaved:
        """Create or replace a trigger (``TriggerIn``: condition, action, cooldown_s...)."""
        return self._one(TriggerSaved, "PUT", f"/api/v1/triggers/{name}", json=trigger)

    def remove_trigger(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/triggers/{name}")

    def list_trigger_fires(self, name: str, limit: int = 100) -> list[Fire]:
        return self._many(Fire, "GET", f"/api/v1/triggers/{name}/fires", params={"limit": limit})

    # --- pipelines (train -> evaluate -> promote) ------------------------------------------

    def set_pipeline(self, name: str, body: dict[str, Any]) -> Pipeline:
        """Create or replace a pipeline (``PipelineIn``: model, train, evaluate, ...)."""
        return self._one(Pipeline, "PUT", f"/api/v1/pipelines/{name}", json=body)

    def get_pipeline(self, name: str) -> Pipeline:
        return self._one(Pipeline, "GET", f"/api/v1/pipelines/{name}")

    def list_pipelines(self) -> list[Pipeline]:
        return self._many(Pipeline, "GET", "/api/v1/pipelines")

    def remove_pipeline(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/pipelines/{name}")

    def run_pipeline(self, name: str) -> PipelineRun:
        """Start a run now (its federated job starts at once); answers the run."""
        return self._one(PipelineRun, "POST", f"/api/v1/pipelines/{name}/runs")

    def get_pipeline_run(self, name: str, run_id: str) -> PipelineRun:
        return self._one(PipelineRun, "GET", f"/api/v1/pipelines/{name}/runs/{run_id}")

    def list_pipeline_runs(self, name: str, limit: int = 100) -> list[PipelineRun]:
        """A pipeline's runs, newest first."""
        return self._many(
            PipelineRun, "GET", f"/api/v1/pipelines/{name}/runs", params={"limit": limit}
        )
