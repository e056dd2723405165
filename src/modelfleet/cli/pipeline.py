"""``modelfleet pipeline apply|ls|run|runs|show``: the closed loop — a federated job whose
result becomes ``candidate``, an evaluation against ``production`` on held-out sites, and
the alias move when it wins. See docs/pipelines.md."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from modelfleet.api.pipelines import PipelineRun
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
    help="Pipelines: weekly federated job -> result as `candidate` -> evaluated against "
    "`production` on held-out sites -> the alias moves when it wins (a deployment that "
    "follows the alias rolls it out). See docs/pipelines.md.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="The pipeline's name.", show_default=False)]
FINISHED = ("promoted", "kept", "failed")


def _scores(run: PipelineRun) -> str:
    s = run.scores
    if s.candidate is None and s.production is None:
        return "-"
    return f"{s.metric or ''} {_num(s.candidate)} vs {_num(s.production)}".strip()


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _versions(run: PipelineRun) -> str:
    c = f"v{run.candidate_version}" if run.candidate_version is not None else "?"
    p = f"v{run.production_version}" if run.production_version is not None else "?"
    return f"{c} vs {p}"


def _say_run(run: PipelineRun) -> None:
    say(f"run {run.id}  pipeline {run.pipeline}  {run.state}")
    say(f"  job {run.job}  evaluation {run.evaluation or '-'}  {_versions(run)}")
    say(f"  scores {_scores(run)}")
    say(f"  {run.message}")


@app.command("apply")
def apply(
    file: Annotated[Path, typer.Argument(help="A YAML pipeline with its `name`.")],
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create or replace a pipeline from a YAML file (the body of PUT
    /api/v1/pipelines/NAME plus `name`). To keep the deployment, the pipeline and its
    schedule in one file, use `modelfleet apply -f fleet.yaml` instead.

    \b
    Examples:
      modelfleet pipeline apply retrain.yaml
    \b
    retrain.yaml:
      name: retrain
      model: machine-health
      train: {model: machine-health@production, data: plant-sensors, rounds: 20,
              sites: "role=train"}
      evaluate: {selector: "role=holdout", margin: 0.01}
    """
    doc = load_yaml_file(file, "pipeline")
    name = doc.pop("name", None)
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{file}: give the pipeline a `name`")
    with client(hub, token) as hc:
        saved = hc.set_pipeline(name, doc)
    if json_out:
        print_json(saved)
        return
    say(
        f"pipeline {saved.name}: {saved.model} trained -> {saved.candidate_alias}, evaluated "
        f"at {saved.evaluate.get('selector')}, "
        + (f"moves {saved.promote_alias} when it wins" if saved.promote else "promote off")
    )


@app.command("ls")
def ls(hub: HubOpt = DEFAULT_HUB, token: TokenOpt = None, json_out: JsonOpt = False) -> None:
    """Every pipeline and its last run.

    \b
    Examples:
      modelfleet pipeline ls
      modelfleet pipeline ls --json
    """
    with client(hub, token) as hc:
        rows = hc.list_pipelines()
    if json_out:
        print_json(rows)
        return
    table(
        None,
        ["name", "model", "aliases", "last run", Col("outcome", free=True)],
        [
            [
                p.name,
                p.model,
                f"{p.candidate_alias} -> {p.promote_alias}" + ("" if p.promote else " (off)"),
                f"{p.last_run.id} {p.last_run.state}" if p.last_run else "-",
                p.last_run.message if p.last_run else "",
            ]
            for p in rows
        ],
        empty="no pipelines (add one: modelfleet pipeline apply FILE)",
    )


@app.command("run")
def run(
    name: NameArg,
    wait: Annotated[
        bool,
        typer.Option(
            help="Wait for the outcome: exit 0 promoted or kept, 1 failed, 2 still running at "
            "--timeout."
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=1, max=7 * 86400, help="With --wait: give up after seconds.")
    ] = 3600.0,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Start a run now: the federated job starts at once, then the evaluation, then the
    alias moves if the candidate wins.

    \b
    Examples:
      modelfleet pipeline run retrain
      modelfleet pipeline run retrain --wait --timeout 7200
    """
    with client(hub, token) as hc:
        started = hc.run_pipeline(name)
        current = started
        if wait:
            deadline = time.monotonic() + timeout
            while current.state not in FINISHED:
                if time.monotonic() > deadline:
                    say(f"run {current.id} still {current.state} after {timeout:g} s", err=True)
                    raise typer.Exit(2)
                time.sleep(1.0)
                current = hc.get_pipeline_run(name, started.id)
    if json_out:
        print_json(current)
    else:
        _say_run(current)
    if wait and current.state == "failed":
        raise typer.Exit(1)


@app.command("runs")
def runs(
    name: NameArg,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A pipeline's runs, newest first.

    \b
    Examples:
      modelfleet pipeline runs retrain
    """
    with client(hub, token) as hc:
        rows = hc.list_pipeline_runs(name, limit)
    if json_out:
        print_json(rows)
        return
    table(
        None,
        ["run", "started (UTC)", "state", "versions", "scores", Col("message", free=True)],
        [[r.id, when(r.started_at), r.state, _versions(r), _scores(r), r.message] for r in rows],
        empty=f"pipeline {name} has not run yet (start one: modelfleet pipeline run {name})",
    )


@app.command("show")
def show(
    name: NameArg,
    run_id: Annotated[str, typer.Argument(help="The run's id.", show_default=False)],
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One run: its job, evaluation, both scores and the outcome.

    \b
    Examples:
      modelfleet pipeline show retrain s-weekly-retrain-20310106T020000Z
    """
    with client(hub, token) as hc:
        found = hc.get_pipeline_run(name, run_id)
    if json_out:
        print_json(found)
    else:
        _say_run(found)
