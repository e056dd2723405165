"""``modelfleet deploy``, ``deployments``, ``undeploy``, ``pin`` and ``unpin``."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from modelfleet.api import DeployResult, Plan
from modelfleet.cli.common import (
    DEFAULT_HUB,
    HubOpt,
    JsonOpt,
    TokenOpt,
    client,
    print_json,
    say,
    styled,
    table,
)
from modelfleet.cli.rollout_wait import OnPauseOpt, TimeoutOpt, wait_until_done
from modelfleet.errors import InvalidInput

STRATEGIES = ("all-at-once", "canary", "waves", "percent", "exponential")


def _numbers(text: str | None, what: str) -> list[float]:
    if not text:
        return []
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise InvalidInput(f"{what} must be comma-separated numbers, e.g. 10,50,100") from exc


def build_request(
    ref: str,
    to: str | None,
    *,
    name: str | None = None,
    strategy: str | None = None,
    canary: str | None = None,
    then: str | None = None,
    waves: str | None = None,
    percent: str | None = None,
    start: int | None = None,
    factor: float | None = None,
    bake: float | None = None,
    deadline: float | None = None,
    max_error_rate: float | None = None,
    max_p99_ms: float | None = None,
    max_p99_ratio: float | None = None,
    min_requests: int | None = None,
    max_drift: float | None = None,
    params: str | None = None,
    follow: bool | None = None,
    approval: str | None = None,
) -> dict[str, Any]:
    """The API request for the flags given.

    No strategy flag: no strategy in the request, so a re-deploy keeps the deployment's.
    Only --bake/--deadline: a strategy without ``kind``, which amends the deployment's. A
    flag that names the kind (or implies it: --canary, --then, --waves, --percent,
    --start, --factor) replaces it. No gate flag: the gates are kept likewise."""
    implied = (
        "canary"
        if canary or then
        else "waves"
        if waves
        else "percent"
        if percent
        else "exponential"
        if start or factor
        else None
    )
    kind = strategy or implied
    if kind is not None and kind not in STRATEGIES:
        raise InvalidInput(
            f"--strategy {kind!r} is not a strategy; use one of {', '.join(STRATEGIES)}"
        )
    spec: dict[str, Any] = {"kind": kind} if kind else {}
    if canary:
        spec["canary"] = canary
    if then:
        spec["then"] = _numbers(then, "--then")
    if waves:
        label, sep, order = waves.partition("=")
        if not sep or not order:
            raise InvalidInput("--waves is LABEL=V1,V2,..., e.g. region=eu-west,us-east,ap-south")
        spec["label"] = label.strip()
        spec["order"] = [v.strip() for v in order.split(",") if v.strip()]
    if percent:
        spec["percentages"] = _numbers(percent, "--percent")
    if approval is not None:
        spec["approval"] = "required" if approval == "required" else {"wave": approval}
    for key, value in (
        ("start", start),
        ("factor", factor),
        ("bake_s", bake),
        ("progress_deadline_s", deadline),
    ):
        if value is not None:
            spec[key] = value
    gates = {
        k: v
        for k, v in (
            ("max_error_rate", max_error_rate),
            ("max_p99_ms", max_p99_ms),
            ("max_p99_ratio", max_p99_ratio),
            ("min_requests", min_requests),
            ("max_drift", max_drift),
        )
        if v is not None
    }
    # Left out when not given: a re-deploy keeps the deployment's selector and parameters.
    request: dict[str, Any] = {"ref": ref}
    if to is not None:
        request["selector"] = to
    if params is not None:
        try:
            request["params"] = json.loads(params)
        except ValueError as exc:
            raise InvalidInput(f"--params is not JSON: {exc}") from exc
    if spec:
        request["strategy"] = spec
    if gates:
        request["gates"] = gates
    if name:
        request["name"] = name
    if follow is not None:
        request["follow"] = follow
    return request


def print_plan(plan: Plan) -> None:
    head = f"{plan.deployment}: {plan.model}:{plan.version} to {plan.selector}"
    say(styled(("plan", "bold"), f" {head} — {plan.strategy_text}"))
    if plan.from_version is not None:
        say(f"  from version {plan.from_version}")
    table(
        "sites that get it",
        ["site", "now", "gets", "online"],
        [
            [t["site"], t["current"], t["version"], "yes" if t["online"] else "no"]
            for t in plan.targets
        ],
    )
    if plan.excluded:
        table(
            "excluded",
            ["site", "why", "detail"],
            [[e["site"], e["reason"], e["detail"]] for e in plan.excluded],
        )
    if plan.waves:
        table(
            "waves",
            ["wave", "sites"],
            [[i + 1, ", ".join(w)] for i, w in enumerate(plan.waves)],
        )
    if plan.policies:
        table(
            "policies evaluated",
            ["policy", "kind", "verdict", "why"],
            [[p.rule, p.kind, p.verdict, p.detail] for p in plan.policies],
        )
    else:
        say("  no policies: nothing restricts where this model runs")
    for v in plan.violations:
        where = f" site {v.site}:" if v.site else ""
        say(styled((f"policy {v.rule}", "red"), f"{where} {v.detail}"))
    for text in plan.warnings:
        say(styled(("warning:", "yellow"), f" {text}"))
    for text in plan.conflicts + plan.errors:
        say(styled(("refused:", "red"), f" {text}"))
    say(styled(("would be accepted", "green") if plan.ok else ("would be refused", "red")))


def deploy(
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME:V.", show_default=False)],
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Site selector, e.g. 'region=eu-west,tier=edge' or 'provider!=aws'; '' selects "
            "every site. Omitted: a new deployment selects every site, a re-deploy keeps its.",
            show_default=False,
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Deployment name (default: model).")] = None,
    strategy: Annotated[
        str | None,
        typer.Option(help=f"{' | '.join(STRATEGIES)} (default: from the flags below)."),
    ] = None,
    canary: Annotated[
        str | None, typer.Option(help="canary: first a site name or a selector.")
    ] = None,
    then: Annotated[
        str | None, typer.Option(help="canary: cumulative % of the rest, e.g. 50,100.")
    ] = None,
    waves: Annotated[
        str | None, typer.Option(help="waves by label order: region=eu-west,us-east,ap-south.")
    ] = None,
    percent: Annotated[
        str | None, typer.Option(help="cumulative percentages, e.g. 10,50,100.")
    ] = None,
    start: Annotated[int | None, typer.Option(help="exponential: sites in step 1.")] = None,
    factor: Annotated[float | None, typer.Option(help="exponential: growth per step.")] = None,
    bake: Annotated[float | None, typer.Option(help="Seconds each step bakes (60).")] = None,
    deadline: Annotated[
        float | None, typer.Option(help="Seconds to reach a verdict per step (600).")
    ] = None,
    max_error_rate: Annotated[float | None, typer.Option(help="Gate, e.g. 0.01.")] = None,
    max_p99_ms: Annotated[float | None, typer.Option(help="Gate: absolute p99 (ms).")] = None,
    max_p99_ratio: Annotated[
        float | None, typer.Option(help="Gate: p99 vs the previous version, e.g. 1.5.")
    ] = None,
    min_requests: Annotated[
        int | None, typer.Option(help="No verdict below this many requests per step.")
    ] = None,
    max_drift: Annotated[float | None, typer.Option(help="Gate: largest PSI/JS.")] = None,
    params: Annotated[str | None, typer.Option(help="Serving parameters as JSON.")] = None,
    follow: Annotated[
        bool | None,
        typer.Option(
            "--follow/--no-follow",
            help="Roll out again, with this strategy and these gates, whenever the alias of "
            "NAME@ALIAS moves. Omitted: a re-deploy keeps it; a NAME:V ref stops following.",
            show_default=False,
        ),
    ] = None,
    approval: Annotated[
        str | None,
        typer.Option(
            help="Wait for `modelfleet rollout approve ID` before a wave: 'required' (before "
            "wave 2), a wave number (1: before any site moves), 'canary' or a --waves value.",
            show_default=False,
        ),
    ] = None,
    plan: Annotated[bool, typer.Option("--plan", help="Show what would happen only.")] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Then wait for the rollout it started, like `rollout wait` (same lines, "
            "exit codes and --timeout); nothing to roll out: exit 0 at once.",
        ),
    ] = False,
    timeout: TimeoutOpt = 3600.0,
    on_pause: OnPauseOpt = "wait",
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Deploy a model version to the sites a selector picks, progressively and lawfully.

    A re-deploy without strategy flags keeps the deployment's strategy (it says "strategy
    kept: ..."); --bake or --deadline alone change only those of the kept strategy;
    --strategy, --canary, --then, --waves, --percent, --start or --factor replace it.
    Without gate flags the gates are kept too; any gate flag replaces them.

    --plan changes nothing: it shows the targets, exclusions, waves and refusals, and
    exits 1 when the deployment would be refused (0 when it would be accepted).

    --wait then follows the rollout the deploy started to its end, for CI: exit 0 when it
    succeeded (or when nothing changed, so no rollout started), 3 failed, 4 aborted, 5
    rolled back, 6 paused (--on-pause exit), 7 --timeout passed; see `rollout wait --help`.

    \b
    Examples:
      modelfleet deploy fraud@production --to region=eu-west --plan
      modelfleet deploy fraud@production --to 'provider!=aws' --canary site-a \\
          --then 50,100 --bake 120 --max-error-rate 0.01 --min-requests 200
      modelfleet deploy fraud:4 --to 'provider!=aws'   # new version, strategy kept
      modelfleet deploy fraud@production --follow --canary site-a --approval required
      modelfleet deploy fraud@production --wait --timeout 1800   # CI: exit 0 = rolled out
    """
    request = build_request(
        ref,
        to,
        name=name,
        strategy=strategy,
        canary=canary,
        then=then,
        waves=waves,
        percent=percent,
        start=start,
        factor=factor,
        bake=bake,
        deadline=deadline,
        max_error_rate=max_error_rate,
        max_p99_ms=max_p99_ms,
        max_p99_ratio=max_p99_ratio,
        min_requests=min_requests,
        max_drift=max_drift,
        params=params,
        follow=follow,
        approval=approval,
    )
    with client(hub, token) as hc:
        if plan:
            planned = hc.plan_deployment(request)
            if json_out:
                print_json(planned)
            else:
                print_plan(planned)
                _print_kept(planned)
            if not planned.ok:
                raise typer.Exit(1)
            return
        result = hc.deploy(request)
        _report(result, json_out=json_out, wait=wait)
        code = 0
        if wait and result.rollout is not None:
            # With --json stdout holds the deploy's answer only; the lines go to stderr.
            code = wait_until_done(
                hc,
                result.rollout.id,
                timeout_s=timeout,
                on_pause=on_pause,
                out=sys.stderr if json_out else None,
            )
    if code:
        raise typer.Exit(code)


def _report(result: DeployResult, *, json_out: bool, wait: bool) -> None:
    if json_out:
        print_json(result)
        return
    d, rollout = result.deployment, result.rollout
    say(f"deployment {d.name}: {d.model}:{d.target_version} to {d.selector or '(every site)'}")
    _print_kept(result.plan)
    if rollout:
        say(f"rollout {rollout.id} started: {rollout.steps} wave(s), {rollout.strategy}")
        if rollout.approval is not None and rollout.approval.awaiting:
            say(f"it awaits approval before wave 1: {rollout.approval.command}")
        if not wait:
            say(f"follow it: modelfleet rollout status {rollout.id} --watch")
    else:
        say(
            "no version change: sites synced, no rollout needed"
            + (" (nothing to wait for)" if wait else "")
        )
    if d.follow is not None:
        say(f"{d.follow.message}; it rolls out by itself whenever {d.follow.alias} moves")


def _gates_text(gates: dict[str, Any]) -> str:
    """The gates that are set, e.g. ``max_error_rate 0.01, min_requests 200``."""
    defaults = {"p99_noise_ms": 10.0, "min_requests": 0}
    shown = [
        f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in gates.items()
        if v is not None and defaults.get(k) != v
    ]
    return ", ".join(shown) or "none"


def _print_kept(plan: Plan) -> None:
    """Say what a re-deploy kept of the deployment, and how to change it."""
    if "strategy" in plan.kept:
        say(
            f"strategy kept: {plan.strategy_text} (bake {plan.strategy.get('bake_s', 60):g}s); "
            "change it with --strategy (or --canary, --waves, --percent, --start)"
        )
    else:
        say(f"strategy: {plan.strategy_text}")
    if "gates" in plan.kept:
        say(f"gates kept: {_gates_text(plan.gates)}; any gate flag replaces them")
    if "selector" in plan.kept:
        say(f"selector kept: {plan.selector or '(every site)'}; change it with --to")
    if "params" in plan.kept:
        say("serving parameters kept; change them with --params JSON ('{}': none)")


def deployments(
    hub: HubOpt = DEFAULT_HUB, token: TokenOpt = None, json_out: JsonOpt = False
) -> None:
    """List deployments; one line each for those that follow an alias: where the alias
    points, and whether its version rolled out (or failed, and what the fleet runs).

    \b
    Examples:
      modelfleet deployments
      modelfleet deployments --json
    """
    with client(hub, token) as hc:
        rows = hc.list_deployments()
    if json_out:
        print_json(rows)
        return
    table(
        None,
        ["name", "model", "ref", "selector", "stable", "target", "rollout"],
        [
            [
                d.name,
                d.model,
                d.ref,
                d.selector,
                d.stable_version,
                d.target_version,
                f"{d.rollout} ({d.rollout_state})" if d.rollout else None,
            ]
            for d in rows
        ],
    )
    for d in rows:  # whole lines: a table column would cut the reason
        if d.follow is not None:
            say(f"{d.name}: {d.follow.message}")


def undeploy(
    name: Annotated[str, typer.Argument(help="Deployment name.", show_default=False)],
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
) -> None:
    """Remove a deployment (its sites stop serving the model unless pinned).

    \b
    Examples:
      modelfleet undeploy machine-health
    """
    with client(hub, token) as hc:
        hc.remove_deployment(name)
    say(f"removed deployment {name}")


def pin(
    site: Annotated[str, typer.Argument(help="Site name.", show_default=False)],
    ref: Annotated[str, typer.Argument(help="MODEL:V or MODEL@ALIAS.", show_default=False)],
    reason: Annotated[str, typer.Option(help="Why (kept with the pin).")] = "",
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
) -> None:
    """Pin a site to a site-specific version; wins over every deployment.

    \b
    Examples:
      modelfleet pin plant-eu-west machine-health:3 --reason "validated on this line"
    """
    with client(hub, token) as hc:
        record = hc.pin(site, ref, reason)
    say(f"{site}: {record.model} pinned to version {record.version}")


def unpin(
    site: Annotated[str, typer.Argument(help="Site name.", show_default=False)],
    model: Annotated[str, typer.Argument(help="Model name.", show_default=False)],
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
) -> None:
    """Remove a pin: the site follows its deployments again.

    \b
    Examples:
      modelfleet unpin plant-eu-west machine-health
    """
    with client(hub, token) as hc:
        hc.unpin(site, model)
    say(f"{site}: {model} follows its deployments again")
