"""``modelfleet schedule add|ls|fires|rm`` and ``modelfleet trigger add|ls|fires|rm``: what
starts a federated job or a retraining hook, by the clock or when a condition holds.
See docs/schedules.md."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from modelfleet.api.schedules import Fire
from modelfleet.cli.common import (
    DEFAULT_HUB,
    Col,
    HubOpt,
    JsonOpt,
    TokenOpt,
    client,
    print_json,
    say,
    table,
    when,
)
from modelfleet.errors import InvalidInput
from modelfleet.yamlfile import load_yaml_file

app = typer.Typer(
    help="Schedules: a cron expression in an explicit time zone starts a federated job or "
    "calls a retraining hook, once per slot. See docs/schedules.md.",
    no_args_is_help=True,
)
trigger_app = typer.Typer(
    help="Triggers: start a federated job or call a retraining hook when a condition holds "
    "(drift at N sites, an anomaly, accuracy below a floor, a new version). "
    "See docs/schedules.md.",
    no_args_is_help=True,
)

FlJobOpt = Annotated[
    Path | None,
    typer.Option(
        "--fl-job", help="Start a federated job from this spec (YAML, as for `fl start -f`)."
    ),
]
HookOpt = Annotated[
    str | None, typer.Option("--hook", help="POST a signed JSON body to this http(s) URL.")
]
HookSecretOpt = Annotated[
    str | None,
    typer.Option(help="The hook's HMAC key (16-200 characters); omitted: the hub makes one."),
]
PayloadOpt = Annotated[
    str | None, typer.Option(help="JSON object sent as the hook body's `payload`.")
]
DescriptionOpt = Annotated[str, typer.Option(help="A note for `ls`.")]
NameArg = Annotated[str, typer.Argument(help="Its name.", show_default=False)]
LimitOpt = Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")]


def _action(
    fl_job: Path | None, hook: str | None, secret: str | None, payload: str | None
) -> dict[str, Any]:
    if (fl_job is None) == (hook is None):
        raise InvalidInput("give one action: --fl-job SPEC.yaml or --hook URL")
    if fl_job is not None:
        if secret is not None or payload is not None:
            raise InvalidInput("--hook-secret and --payload go with --hook")
        return {"kind": "federated", "job": load_yaml_file(fl_job, "federated job spec")}
    doc: dict[str, Any] = {"kind": "hook", "url": hook}
    if secret is not None:
        doc["secret"] = secret
    if payload is not None:
        try:
            value = json.loads(payload)
        except ValueError as exc:
            raise InvalidInput(f"--payload is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise InvalidInput("--payload must be a JSON object")
        doc["payload"] = value
    return doc


def _in_zone(value: datetime | None, zone: str) -> str:
    if value is None:
        return "-"
    with contextlib.suppress(ZoneInfoNotFoundError, ValueError):  # the hub checked it
        value = value.astimezone(ZoneInfo(zone))
    return value.strftime("%a %Y-%m-%d %H:%M %Z")


def _what(action: dict[str, Any]) -> str:
    if action.get("kind") == "federated":
        job = action.get("job", {})
        return f"fl {job.get('model')} ({job.get('rounds')} rounds)"
    return f"hook {action.get('url')}"


def _last(fire: Fire | None) -> str:
    if fire is None:
        return "-"
    return f"{fire.state} {when(fire.slot)}" + (f" {fire.job}" if fire.job else "")


def _fires(rows: list[Fire], json_out: bool, empty: str) -> None:
    if json_out:
        print_json(rows)
        return
    table(
        None,
        ["slot (UTC)", "state", "job", Col("detail", free=True)],
        [[when(f.slot), f.state, f.job or "-", f.detail or f.reason] for f in rows],
        empty=empty,
    )


# --- schedules -------------------------------------------------------------------------


@app.command("add")
def add(
    name: NameArg,
    cron: Annotated[
        str, typer.Option(help="Five fields: minute hour day-of-month month day-of-week.")
    ],
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone, e.g. Europe/Berlin or UTC.")],
    fl_job: FlJobOpt = None,
    hook: HookOpt = None,
    hook_secret: HookSecretOpt = None,
    payload: PayloadOpt = None,
    misfire_grace: Annotated[
        float,
        typer.Option(
            min=1,
            max=7 * 86400,
            help="Seconds: a slot judged later than this (the hub was down) is recorded "
            "missed instead of fired.",
        ),
    ] = 600.0,
    disabled: Annotated[bool, typer.Option("--disabled", help="Save it switched off.")] = False,
    description: DescriptionOpt = "",
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create (or replace) a schedule. It fires once per slot across hub replicas and
    restarts; a slot the hub could not judge within --misfire-grace is recorded missed.

    \b
    Examples:
      modelfleet schedule add weekly-retrain --cron '0 3 * * MON' --tz Europe/Berlin \\
          --fl-job job.yaml
      modelfleet schedule add nightly-hook --cron '30 2 * * *' --tz America/New_York \\
          --hook https://ci.example/retrain --payload '{"pipeline": "train"}'
    """
    body = {
        "cron": cron,
        "timezone": tz,
        "action": _action(fl_job, hook, hook_secret, payload),
        "enabled": not disabled,
        "misfire_grace_s": misfire_grace,
        "description": description,
    }
    with client(hub, token) as hc:
        saved = hc.set_schedule(name, body)
    if json_out:
        print_json(saved)
        return
    say(
        f"schedule {saved.name}: {saved.cron!r} in {saved.timezone} -> {_what(saved.action)}; "
        f"next slot {_in_zone(saved.next_slot, saved.timezone)}"
    )
    if saved.secret:
        say(f"hook secret (shown once; verify X-Modelfleet-Signature with it): {saved.secret}")


@app.command("ls")
def ls(hub: HubOpt = DEFAULT_HUB, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """Every schedule: its next slot in its own time zone and its last fire (or miss).

    \b
    Examples:
      modelfleet schedule ls
      modelfleet schedule ls --json
    """
    with client(hub, token) as hc:
        rows = hc.list_schedules()
    if json_out:
        print_json(rows)
        return
    table(
        None,
        ["name", "cron", "zone", "next slot", "last", Col("action", free=True)],
        [
            [
                s.name,
                s.cron,
                s.timezone,
                _in_zone(s.next_slot, s.timezone) if s.enabled else "disabled",
                _last(s.last_fire),
                _what(s.action),
            ]
            for s in rows
        ],
        empty="no schedules (add one: modelfleet schedule add NAME --cron ... --tz ...)",
    )


@app.command("fires")
def fires(
    name: NameArg,
    limit: LimitOpt = 100,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A schedule's slots, newest first: fired (with the job), failed, missed, interrupted.

    \b
    Examples:
      modelfleet schedule fires weekly-retrain
    """
    with client(hub, token) as hc:
        rows = hc.list_schedule_fires(name, limit)
    _fires(rows, json_out, f"schedule {name} has not fired yet")


@app.command("rm")
def rm(name: NameArg, hub: HubOpt = DEFAULT_HUB, token: TokenOpt = None) -> None:
    """Remove a schedule and its record of fires.

    \b
    Examples:
      modelfleet schedule rm weekly-retrain
    """
    with client(hub, token) as hc:
        hc.remove_schedule(name)
    say(f"schedule {name} removed")


# --- triggers --------------------------------------------------------------------------


@trigger_app.command("add")
def trigger_add(
    name: NameArg,
    when_: Annotated[
        str,
        typer.Option(
            "--when", help="The condition: drift, anomaly, new_version or accuracy_below."
        ),
    ],
    model: Annotated[str, typer.Option(help="The model the condition watches.")],
    min_sites: Annotated[
        int | None,
        typer.Option(min=1, max=100_000, help="drift, accuracy_below: at this many sites."),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(help="anomaly: one metric (e.g. error_rate); accuracy_below: accuracy|mae."),
    ] = None,
    severity: Annotated[
        str | None, typer.Option(help="anomaly: the least severity, warning or critical.")
    ] = None,
    floor: Annotated[
        float | None, typer.Option(help="accuracy_below: the floor (mae: the ceiling).")
    ] = None,
    fl_job: FlJobOpt = None,
    hook: HookOpt = None,
    hook_secret: HookSecretOpt = None,
    payload: PayloadOpt = None,
    cooldown: Annotated[
        float,
        typer.Option(min=1, max=30 * 86400, help="Seconds after a fire before it may fire again."),
    ] = 3600.0,
    disabled: Annotated[bool, typer.Option("--disabled", help="Save it switched off.")] = False,
    description: DescriptionOpt = "",
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create (or replace) a trigger: when its condition holds, start its action, then
    wait --cooldown before looking again.

    \b
    Examples:
      modelfleet trigger add drift-retrain --when drift --model machine-health \\
          --min-sites 3 --fl-job job.yaml
      modelfleet trigger add on-push --when new_version --model machine-health \\
          --hook https://ci.example/evaluate
      modelfleet trigger add errors --when anomaly --model machine-health \\
          --metric error_rate --severity critical --hook https://ci.example/page
    """
    condition: dict[str, Any] = {"kind": when_, "model": model}
    extra = {"min_sites": min_sites, "metric": metric, "severity": severity, "floor": floor}
    condition.update({k: v for k, v in extra.items() if v is not None})
    body = {
        "condition": condition,
        "action": _action(fl_job, hook, hook_secret, payload),
        "cooldown_s": cooldown,
        "enabled": not disabled,
        "description": description,
    }
    with client(hub, token) as hc:
        saved = hc.set_trigger(name, body)
    if json_out:
        print_json(saved)
        return
    say(f"trigger {saved.name}: when {when_} on {model} -> {_what(saved.action)}")
    if saved.secret:
        say(f"hook secret (shown once; verify X-Modelfleet-Signature with it): {saved.secret}")


@trigger_app.command("ls")
def trigger_ls(
    hub: HubOpt = DEFAULT_HUB, token: TokenOpt = None, json_out: JsonOpt = False
) -> None:
    """Every trigger: its condition, fires, cooldown and last fire.

    \b
    Examples:
      modelfleet trigger ls
    """
    with client(hub, token) as hc:
        rows = hc.list_triggers()
    if json_out:
        print_json(rows)
        return
    table(
        None,
        ["name", "when", "model", "fires", "cooling until", "last", Col("action", free=True)],
        [
            [
                t.name,
                t.condition.get("kind"),
                t.condition.get("model"),
                t.fires,
                when(t.cooling_until),
                _last(t.last_fire),
                _what(t.action) + ("" if t.enabled else " (disabled)"),
            ]
            for t in rows
        ],
        empty="no triggers (add one: modelfleet trigger add NAME --when ... --model ...)",
    )


@trigger_app.command("fires")
def trigger_fires(
    name: NameArg,
    limit: LimitOpt = 100,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A trigger's fires, newest first, with why the condition held and the outcome.

    \b
    Examples:
      modelfleet trigger fires drift-retrain
    """
    with client(hub, token) as hc:
        rows = hc.list_trigger_fires(name, limit)
    _fires(rows, json_out, f"trigger {name} has not fired yet")


@trigger_app.command("rm")
def trigger_rm(name: NameArg, hub: HubOpt = DEFAULT_HUB, token: TokenOpt = None) -> None:
    """Remove a trigger and its record of fires.

    \b
    Examples:
      modelfleet trigger rm drift-retrain
    """
    with client(hub, token) as hc:
        hc.remove_trigger(name)
    say(f"trigger {name} removed")
