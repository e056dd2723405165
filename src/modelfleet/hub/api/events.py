"""/api/v1/events (the event log, paged and as a server-sent-events stream) and
/api/v1/webhooks (delivery targets, their dead letters)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from modelfleet.api.events import DeadLetter, Event, Redelivered, Webhook, WebhookCreated, WebhookIn
from modelfleet.errors import InvalidInput, Overloaded
from modelfleet.hub.api.deps import Caller, Context, audited, require
from modelfleet.hub.auth import Permission
from modelfleet.hub.context import HubContext
from modelfleet.hub.events import check_patterns
from modelfleet.hub.store.records import EventRecord
from modelfleet.hub.store.repos.events import type_matches
from modelfleet.hub.webhooks import event_json

router = APIRouter(prefix="/api/v1", tags=["events"])

#: Streams one hub process holds at once; one more is answered 503 (retry later).
MAX_STREAMS = 64
#: A comment line this often keeps proxies from closing an idle stream.
HEARTBEAT_S = 15.0
#: How often a stream re-reads the log for events written by another replica or process.
POLL_S = 1.0
_streams = {"open": 0}

TypesQuery = Annotated[
    list[str] | None,
    Query(
        alias="type",
        max_length=50,
        description="Event types, repeatable: exact, family.* or *. Omitted: all.",
    ),
]
AfterQuery = Annotated[int, Query(ge=0, le=2**53, description="Only events with a larger id.")]


def _event(e: EventRecord) -> Event:
    return Event(id=e.id, type=e.type, subject=e.subject, at=e.at, payload=e.payload)


def _types(types: list[str] | None) -> list[str] | None:
    return check_patterns(types) if types else None


@router.get("/events", response_model=list[Event], summary="Events after a cursor, oldest first")
def list_events(
    ctx: Context,
    caller: Caller,
    after: AfterQuery = 0,
    types: TypesQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Event]:
    caller.require(Permission.SITES_READ)
    found = ctx.events.repo.list_events(after=after, types=_types(types), limit=limit)
    return [_event(e) for e in found]


@router.get(
    "/events/stream",
    summary="Server-sent events: each event as it happens (resume with Last-Event-ID)",
    response_class=Response,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_events(
    ctx: Context,
    caller: Caller,
    after: Annotated[int | None, Query(ge=0, le=2**53)] = None,
    types: TypesQuery = None,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> Response:
    caller.require(Permission.SITES_READ)
    cursor = _cursor(after, last_event_id)
    patterns = _types(types)
    if cursor is None:  # from now on
        cursor = await run_in_threadpool(ctx.events.repo.last_id)
    if _streams["open"] >= MAX_STREAMS:
        raise Overloaded(f"this hub already holds {MAX_STREAMS} event streams; retry later")
    return StreamingResponse(
        _sse(ctx, cursor, patterns),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _cursor(after: int | None, last_event_id: str | None) -> int | None:
    """``Last-Event-ID`` (a reconnecting client) wins over ``after``."""
    if last_event_id is None or not last_event_id.strip():
        return after
    try:
        value = int(last_event_id.strip())
    except ValueError as exc:
        raise InvalidInput(f"Last-Event-ID {last_event_id!r} is not an event id") from exc
    if not 0 <= value <= 2**53:
        raise InvalidInput(f"Last-Event-ID {value} is out of range")
    return value


async def _sse(ctx: HubContext, cursor: int, patterns: list[str] | None) -> AsyncIterator[bytes]:
    """Events as ``id:``/``event:``/``data:`` blocks; ends when the hub stops."""
    _streams["open"] += 1
    try:
        yield f"retry: 2000\n: modelfleet events after {cursor}\n\n".encode()
        beat = time.monotonic()
        while not ctx.events.bell.closed:
            batch = await run_in_threadpool(
                ctx.events.repo.list_events, after=cursor, types=None, limit=200
            )
            for event in batch:
                cursor = event.id
                if patterns is not None and not type_matches(patterns, event.type):
                    continue
                data = json.dumps(event_json(event), separators=(",", ":"))
                yield f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()
            if len(batch) == 200:
                continue
            if time.monotonic() - beat >= HEARTBEAT_S:
                beat = time.monotonic()
                yield b": heartbeat\n\n"
            await ctx.events.wait(POLL_S)
    finally:
        _streams["open"] -= 1


# --- webhooks ----------------------------------------------------------------------


@router.get("/webhooks", response_model=list[Webhook], summary="Webhook targets (never secrets)")
def list_webhooks(ctx: Context, caller: Caller) -> list[Webhook]:
    caller.require(Permission.DEPLOY_WRITE)
    return [Webhook(**ctx.webhooks.view(t)) for t in ctx.webhooks.targets()]


@router.post(
    "/webhooks",
    status_code=201,
    response_model=WebhookCreated,
    summary="Add a webhook target (its secret is shown once)",
)
def add_webhook(body: WebhookIn, ctx: Context, caller: Caller) -> WebhookCreated:
    require(ctx, caller, Permission.DEPLOY_WRITE, "webhook.add", body.url[:200])
    with audited(ctx, caller, "webhook.add", body.url[:200]) as detail:
        target, secret = ctx.webhooks.add(
            url=body.url,
            events=body.events,
            fmt=body.format,
            secret=body.secret,
            description=body.description,
            max_attempts=body.max_attempts,
            actor=caller.actor,
        )
        detail.append(f"id {target.id} events {','.join(target.events)} format {target.format}")
    return WebhookCreated(**ctx.webhooks.view(target), secret=secret)


@router.delete("/webhooks/{webhook_id}", status_code=204, summary="Remove a webhook target")
def remove_webhook(webhook_id: str, ctx: Context, caller: Caller) -> Response:
    require(ctx, caller, Permission.DEPLOY_WRITE, "webhook.remove", webhook_id[:64])
    with audited(ctx, caller, "webhook.remove", webhook_id[:64]):
        ctx.webhooks.remove(webhook_id)
    return Response(status_code=204)


@router.get(
    "/webhooks/{webhook_id}/dead-letters",
    response_model=list[DeadLetter],
    summary="Events the target never acknowledged within its attempts",
)
def dead_letters(
    webhook_id: str,
    ctx: Context,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetter]:
    caller.require(Permission.DEPLOY_WRITE)
    return [DeadLetter(**d) for d in ctx.webhooks.dead_letters(webhook_id, limit)]


class RedeliverIn(BaseModel):
    event_ids: list[Annotated[int, Field(ge=0, le=2**53)]] | None = Field(
        default=None, max_length=1000, description="Omitted: every dead letter."
    )


@router.post(
    "/webhooks/{webhook_id}/redeliver",
    response_model=Redelivered,
    summary="Queue dead letters again, with fresh attempts",
)
def redeliver(webhook_id: str, body: RedeliverIn, ctx: Context, caller: Caller) -> Redelivered:
    require(ctx, caller, Permission.DEPLOY_WRITE, "webhook.redeliver", webhook_id[:64])
    with audited(ctx, caller, "webhook.redeliver", webhook_id[:64]) as detail:
        count = ctx.webhooks.redeliver(webhook_id, body.event_ids)
        detail.append(f"{count} requeued")
    return Redelivered(requeued=count)
