"""``modelfleet evaluate MODEL --versions A,B --sites SELECTOR``: which version does best
on the sites' own labelled data (docs/evaluations.md)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from modelfleet.api.evaluations import Evaluation
from modelfleet.cli.common import (
    DEFAULT_HUB,
    Col,
    HubOpt,
    JsonOpt,
    TokenOpt,
    client,
    print_json,
    say,
    styled,
    table,
)
from modelfleet.errors import InvalidInput

#: How often ``--wait`` asks the hub again.
POLL_S = 1.0
#: ``--wait`` gives up this long after the evaluation's own deadline (the hub's loop
#: finishes it within a second or two of the deadline).
GRACE_S = 30.0


def _versions(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if len(items) < 2:
        raise InvalidInput(f"--versions needs at least two versions, got {text!r}")
    return items


def evaluate(
    model: Annotated[str, typer.Argument(help="Model name.", show_default=False)],
    versions: Annotated[
        str,
        typer.Option(
            help="Comma-separated aliases or numbers, 2 to 8; the first is compared with "
            "each of the others (e.g. candidate,production).",
            show_default=False,
        ),
    ],
    sites: Annotated[
        str, typer.Option("--sites", help="Label selector of the evaluating sites.")
    ] = "",
    min_samples: Annotated[
        int, typer.Option(help="A site with fewer labelled rows refuses.", min=1, max=1_000_000)
    ] = 20,
    metric: Annotated[
        str | None,
        typer.Option(
            help="accuracy, balanced_accuracy (mean per-class recall: for imbalanced "
            "classes) or mae; default: from the model's outputs."
        ),
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Data set name in the site config (default: its only one).")
    ] = None,
    rows: Annotated[str, typer.Option(help="holdout or all (rows of the data set).")] = "holdout",
    deadline: Annotated[
        float, typer.Option(help="Seconds before silent sites count as missing.", min=5, max=86400)
    ] = 600.0,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the outcome; exit 1 if it failed.")
    ] = False,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Ask the selected sites to score versions of a model on their local labelled data.

    Only counts come back (rows evaluated, correct predictions or absolute-error sums;
    per-class right/total for balanced_accuracy); the hub adds them up over the sites and
    names the winner.

    \b
    Examples:
      modelfleet evaluate machine-health --versions candidate,production --sites role=holdout
      modelfleet evaluate machine-health --versions 7,5,3 --sites 'region in (eu-west)' --wait
      modelfleet evaluate machine-health --versions 7,5 --metric balanced_accuracy --wait
      modelfleet evaluate load-forecast --versions candidate,production --metric mae --json
    """
    request = {
        "model": model,
        "versions": _versions(versions),
        "selector": sites,
        "min_samples": min_samples,
        "metric": metric,
        "data": data,
        "rows": rows,
        "deadline_s": deadline,
    }
    with client(hub, token) as hc:
        found = hc.start_evaluation(request)
        if wait:
            give_up = found.deadline_at.timestamp() + GRACE_S
            while found.state == "running" and time.time() < give_up:
                time.sleep(POLL_S)
                found = hc.get_evaluation(found.id)
    if json_out:
        print_json(found)
    else:
        render(found)
    if wait and found.state != "completed":
        raise typer.Exit(1)


def render(found: Evaluation) -> None:
    """The evaluation as tables: per version, per site, then the verdict."""
    refs = dict(zip(found.versions, found.refs, strict=False))
    say(styled(("evaluation ", ""), (found.id, "bold"), f"  {found.model}  {found.state}"))
    table(
        None,
        ["VERSION", "AS", "METRIC", "VALUE", "ROWS", "SITES"],
        [
            (
                v,
                refs.get(v, ""),
                s.metric,
                "-" if s.value is None else f"{s.value:.4f}",
                s.count,
                s.sites,
            )
            for v, s in found.per_version.items()
        ],
    )
    table(
        None,
        [Col("SITE", keep=True), "STATUS", Col("REASON", free=True)],
        [(o.site, o.status, o.reason) for o in found.sites.values()],
        empty="no site matched",
    )
    for name, comparison in found.beats.items():
        change = "-" if comparison.margin is None else f"{comparison.margin:+.4f}"
        say(f"{name}: {'beats' if comparison.beats else 'does not beat'} ({change})")
    winner = "none" if found.winner is None else str(found.winner)
    say(f"winner: {winner}  ({found.message})")
