"""``modelfleet events`` (the hub's event log, or its live stream) and ``modelfleet webhook
add|ls|rm|dead-letters|redeliver`` (where the hub delivers events)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from modelfleet.api.events import Event
from modelfleet.cli.common import (
    DEFAULT_HUB,
    Col,
    HubOpt,
    JsonOpt,
    TokenOpt,
    client,
    jsonable,
    print_json,
    say,
    table,
    warn,
    when,
)
from modelfleet.errors import HubUnreachable
from modelfleet.hub_client import HubClient
from modelfleet.loops import Backoff

TypeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--type",
        metavar="TYPE",
        help="Only these event types (repeatable): exact (rollout.failed), a family "
        "(rollout.*) or *.",
    ),
]


def _summary(e: Event) -> str:
    p = e.payload
    for key in ("reason", "message"):
        if p.get(key):
            return str(p[key])
    if e.type.startswith("rollout."):
        text = f"{p.get('model')} {p.get('from_version')} -> {p.get('to_version')}"
        return text + (f" wave {p['wave']}/{p.get('waves')}" if p.get("wave") else "")
    return ", ".join(f"{k}={v}" for k, v in list(p.items())[:4])


def _line(e: Event, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(jsonable(e), separators=(",", ":")))
    else:
        say(f"{e.id:>6}  {when(e.at)}  {e.type:<20} {e.subject}  {_summary(e)}")


def events(
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="After the log, stream new events as they happen (until Ctrl-C); a hub "
            "restart is ridden out, resuming after the last event seen.",
        ),
    ] = False,
    types: TypeOpt = None,
    after: Annotated[
        int, typer.Option(min=0, max=2**53, help="Only events with an id above this.")
    ] = 0,
    limit: Annotated[
        int, typer.Option(min=1, max=1000, help="At most this many (without --follow).")
    ] = 100,
    hub_patience: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=3600.0,
            help="With --follow: how long to keep reconnecting while the hub is unreachable "
            "before giving up with exit 1 (0-3600 s).",
        ),
    ] = 300.0,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The hub's events, oldest first: rollouts started, waves passed, rollouts failed or
    rolled back, sites offline/online, federated jobs finished, keys rotated.

    Each has an id; --after ID resumes after one. --json prints a JSON list (with --follow:
    one JSON object per line).

    \b
    Examples:
      modelfleet events
      modelfleet events --type 'rollout.*' --after 120 --json
      modelfleet events --follow --type site.offline
    """
    with client(hub, token) as hc:
        found = hc.list_events(after=after, types=types, limit=limit)
        if not follow:
            if json_out:
                print_json(found)
                return
            rows = [[e.id, when(e.at), e.type, e.subject, _summary(e)] for e in found]
            table(
                None,
                ["id", "at", "type", "subject", Col("summary", free=True)],
                rows,
                empty="no events",
            )
            return
        cursor = after
        for e in found:
            _line(e, json_out)
            cursor = e.id
        _follow(hc, cursor, types, json_out, hub_patience)


def _follow(
    hc: HubClient, cursor: int, types: list[str] | None, json_out: bool, patience_s: float
) -> None:
    """Stream from ``cursor`` on; reconnect (``Last-Event-ID``) when the stream ends or the
    hub is away, with back-off, for up to ``patience_s`` of being unable to connect."""
    backoff = Backoff(first_s=0.5, max_s=10.0)
    failures = 0
    deadline: float | None = None
    while True:
        try:
            for e in hc.stream_events(after=cursor, types=types):
                if failures:
                    say("hub reachable again: following events", err=True)
                    failures, deadline = 0, None
                _line(e, json_out)
                cursor = e.id
            # The hub ended the stream (it is stopping): reconnect after a moment.
            failures, deadline = max(failures, 1), deadline or time.monotonic() + patience_s
            time.sleep(0.5)
        except HubUnreachable as exc:
            now = time.monotonic()
            deadline = deadline or now + patience_s
            if now >= deadline:
                raise
            failures += 1
            if failures == 1:
                warn(f"{exc.message}; still following (for up to {patience_s:.0f}s)")
            time.sleep(min(backoff.delay(failures), max(0.0, deadline - now)))


webhook_app = typer.Typer(
    help="Where the hub delivers events: HTTP(S) targets per event type, signed "
    "(HMAC-SHA256), retried with back-off, then dead-lettered. See docs/events.md.",
    no_args_is_help=True,
)


@webhook_app.command("add")
def add(
    url: Annotated[str, typer.Argument(help="http(s)://host/path the hub POSTs events to.")],
    event_types: Annotated[
        list[str],
        typer.Option(
            "--events",
            metavar="TYPES",
            help="Event types (repeatable, or comma-separated): rollout.failed, rollout.*, *.",
        ),
    ],
    fmt: Annotated[
        str, typer.Option("--format", help='json (the event) or slack ({"text": ...}).')
    ] = "json",
    secret: Annotated[
        str | None,
        typer.Option(help="The HMAC key (16-200 characters); omitted: the hub makes one."),
    ] = None,
    description: Annotated[str, typer.Option(help="A note for `webhook ls`.")] = "",
    max_attempts: Annotated[
        int, typer.Option(min=1, max=20, help="Attempts before an event is dead-lettered.")
    ] = 8,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Deliver events of the given types to a URL, from now on. The secret is printed once.

    \b
    Examples:
      modelfleet webhook add https://ci.example/hooks/modelfleet --events 'rollout.*'
      modelfleet webhook add https://hooks.slack.com/services/T/B/X --events rollout.failed \\
          --events site.offline --format slack
    """
    patterns = [p.strip() for item in event_types for p in item.split(",") if p.strip()]
    with client(hub, token) as hc:
        created = hc.create_webhook(
            url,
            patterns,
            format=fmt,
            secret=secret,
            description=description,
            max_attempts=max_attempts,
        )
    if json_out:
        print_json(created)
        return
    say(f"webhook {created.id}: {created.url} gets {', '.join(created.events)} ({created.format})")
    say(f"secret (shown once; verify X-Modelfleet-Signature with it): {created.secret}")


@webhook_app.command("ls")
def ls(hub: HubOpt = DEFAULT_HUB, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """Every webhook target, with what it still owes (pending) and gave up on (dead).

    \b
    Examples:
      modelfleet webhook ls
    """
    with client(hub, token) as hc:
        rows = hc.list_webhooks()
    if json_out:
        print_json(rows)
        return
    table(
        None,
        ["id", Col("url", free=True), "events", "format", "pending", "dead", "created"],
        [
            [
                w.id,
                w.url,
                ",".join(w.events),
                w.format,
                w.pending,
                w.dead_letters,
                when(w.created_at),
            ]
            for w in rows
        ],
        empty="no webhooks (add one: modelfleet webhook add URL --events 'rollout.*')",
    )


@webhook_app.command("rm")
def rm(
    webhook_id: Annotated[str, typer.Argument(help="The webhook's id (see `webhook ls`).")],
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
) -> None:
    """Stop delivering to a target and forget its queue.

    \b
    Examples:
      modelfleet webhook rm wh-1a2b3c4d5e
    """
    with client(hub, token) as hc:
        hc.remove_webhook(webhook_id)
    say(f"webhook {webhook_id} removed")


@webhook_app.command("dead-letters")
def dead_letters(
    webhook_id: Annotated[str, typer.Argument(help="The webhook's id (see `webhook ls`).")],
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Events a target never acknowledged within its attempts, with the last error.

    \b
    Examples:
      modelfleet webhook dead-letters wh-1a2b3c4d5e
    """
    with client(hub, token) as hc:
        rows = hc.list_dead_letters(webhook_id, limit)
    if json_out:
        print_json(rows)
        return
    table(
        None,
        ["event", "type", "subject", "attempts", Col("last error", free=True), "at"],
        [
            [d.event_id, d.type, d.subject, d.attempts, d.last_error, when(d.updated_at)]
            for d in rows
        ],
        empty=f"webhook {webhook_id} has no dead letters",
    )


@webhook_app.command("redeliver")
def redeliver(
    webhook_id: Annotated[str, typer.Argument(help="The webhook's id (see `webhook ls`).")],
    event_ids: Annotated[
        list[int] | None,
        typer.Option("--event", metavar="ID", help="Only these event ids (repeatable)."),
    ] = None,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
) -> None:
    """Queue a target's dead letters again, with fresh attempts.

    \b
    Examples:
      modelfleet webhook redeliver wh-1a2b3c4d5e
      modelfleet webhook redeliver wh-1a2b3c4d5e --event 42
    """
    with client(hub, token) as hc:
        result = hc.redeliver_webhook(webhook_id, event_ids or None)
    say(f"{result.requeued} event(s) queued again for webhook {webhook_id}")
