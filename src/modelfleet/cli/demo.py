"""``modelfleet demo``: the product's main job end to end on the embedded default."""

from __future__ import annotations

from typing import Annotated

import typer


def demo(
    keep: Annotated[
        bool,
        typer.Option(
            "--keep",
            help="At the end, leave the fleet (hub and sites) running and print its URL, "
            "token and CA file to explore it with; Ctrl-C stops it.",
        ),
    ] = False,
    fast: Annotated[
        bool,
        typer.Option("--fast", help="Smaller data, fewer rounds, shorter pauses (the tests)."),
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the final report as JSON on stdout.")
    ] = False,
) -> None:
    """Predictive maintenance in three plants, with real processes on loopback.

    One hub and three site agents (eu-west, us-east, ap-south), each behind an emulated WAN
    link, on the embedded default (SQLite, a local directory) in a temporary directory.
    The scenario: each plant's data stays local; a model is trained centrally on the data
    that may be pooled; a residency policy keeps models trained on Indian data in India; a
    canary rollout with health gates serves v1 at every plant; local latency is measured
    against a central deployment; a slow release fails its canary gate and rolls back; the
    hub is killed and the plants keep predicting; a drifting sensor is flagged at its site
    only; the plants train a federated model that is rolled out through the same gates;
    and the hub's telemetry must count exactly the requests that were answered.

    It ends with a report of what was measured and exits 0 only if every check held (1
    otherwise; the working directory with every log is then kept).

    Examples:

      modelfleet demo

      modelfleet demo --fast --json > report.json

      modelfleet demo --keep
    """
    from modelfleet.sim.demo import run_demo

    ok = run_demo(keep=keep, fast=fast, json_out=json_out)
    if not ok:
        raise typer.Exit(1)
