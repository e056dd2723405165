"""Entry point: ``modelfleet <noun> <verb>``; errors become one line and a non-zero exit."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError
from rich.text import Text

from modelfleet._version import __version__
from modelfleet.cli import (
    anomalies,
    audit,
    demo,
    drift,
    events,
    fl,
    gateway,
    hub,
    hub_cert,
    hub_keys,
    hub_token,
    model,
    pipeline,
    policy,
    rollout,
    rollout_wait,
    schedule,
    sim,
    site,
    status,
    token,
)
from modelfleet.cli import apply as apply_cmd
from modelfleet.cli import deploy as deploy_cmd
from modelfleet.cli import evaluate as evaluate_cmd
from modelfleet.cli.common import err_console, validation_message
from modelfleet.errors import ModelfleetError

app = typer.Typer(
    name="modelfleet",
    help="Deploy, serve, monitor and improve ML models across many sites from one hub.\n\n"
    "Connection: --hub / $MODELFLEET_HUB_URL (default https://127.0.0.1:8700), "
    "--token / $MODELFLEET_TOKEN and $MODELFLEET_CA_FILE (the fleet CA, the hub data "
    "directory's tls/ca.pem).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Usage errors as click prints them: "Usage: ...", a hint, "Error: <one line>" (exit 2);
    # no panel to wrap or cut, and the same whichever copy of click typer carries.
    rich_markup_mode=None,
)
app.add_typer(hub.app, name="hub")
hub.app.add_typer(hub_keys.app, name="key")
hub.app.add_typer(hub_token.app, name="token")
hub.app.add_typer(hub_cert.app, name="cert")
app.add_typer(fl.app, name="fl")
app.add_typer(model.app, name="model")
app.add_typer(site.app, name="site")
app.add_typer(token.app, name="token")
app.add_typer(gateway.app, name="gateway")
app.add_typer(sim.app, name="sim")
app.command("audit")(audit.audit)
app.command("demo")(demo.demo)
app.command("status")(status.status)
app.command("drift")(drift.drift)
app.command("anomalies")(anomalies.anomalies)
app.command("events")(events.events)
app.add_typer(events.webhook_app, name="webhook")
app.add_typer(policy.app, name="policy")
app.add_typer(rollout.app, name="rollout")
rollout.app.command("wait", epilog=rollout_wait.WAIT_HELP)(rollout_wait.wait)
app.command("deploy")(deploy_cmd.deploy)
app.command("deployments")(deploy_cmd.deployments)
app.command("undeploy")(deploy_cmd.undeploy)
app.command("pin")(deploy_cmd.pin)
app.command("unpin")(deploy_cmd.unpin)
app.command("apply")(apply_cmd.apply)
app.command("evaluate")(evaluate_cmd.evaluate)
app.add_typer(schedule.app, name="schedule")
app.add_typer(pipeline.app, name="pipeline")
app.add_typer(schedule.trigger_app, name="trigger")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"modelfleet {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """modelfleet command line."""


def _error(message: str) -> None:
    """``error: <message>`` on stderr as text (never markup: ``[postgres]`` stays), exit 1."""
    err_console.print(
        Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True
    )
    sys.exit(1)


def main() -> None:
    """Run the CLI. Click (whichever copy the installed typer carries) handles usage errors
    itself in standalone mode: a usage message and exit 2, never a traceback. Our own
    refusals surface as :class:`ModelfleetError` and become one line and exit 1."""
    try:
        app(standalone_mode=True)
    except ModelfleetError as exc:
        _error(exc.message)
    except ValidationError as exc:
        # A value a command passed on to a validated record (a job's or a spec's field):
        # one line naming the field and its bound, not pydantic's report with its URLs.
        _error(validation_message(exc))
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
