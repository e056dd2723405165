"""Shared CLI pieces: hub connection options, output as table or JSON, progress bars."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from modelfleet.errors import InvalidInput
from modelfleet.hub_client import HubClient
from modelfleet.settings import DEFAULT_HUB_URL

console = Console()
err_console = Console(stderr=True)

HubOpt = Annotated[
    str,
    typer.Option(
        "--hub",
        envvar="MODELFLEET_HUB_URL",
        help="Hub base URL.",
        show_default=True,
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="MODELFLEET_TOKEN",
        help="Bearer token (default: $MODELFLEET_TOKEN).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ReadyFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--ready-file",
        help='Once listening, write {"pid": ..., "port": ...} to this file (for launchers; '
        "with --port 0 it is how they learn the port the kernel chose).",
        show_default=False,
    ),
]

DEFAULT_HUB = DEFAULT_HUB_URL


def client(hub: str, token: str | None) -> HubClient:
    return HubClient(hub, token)


def jsonable(data: Any) -> Any:
    """Records (and lists of them) as the JSON the hub sent: ``exclude_unset`` leaves out
    optional fields the answer did not carry, so ``--json`` prints what the API returned."""
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json", exclude_unset=True)
    if isinstance(data, list):
        return [jsonable(item) for item in data]
    return data


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(jsonable(data), indent=2, default=str) + "\n")


def when(value: Any) -> str:
    """Timestamps in the terminal: UTC, to the second."""
    if not value:
        return "-"
    text = str(value)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    grid = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*("-" if cell is None else str(cell) for cell in row))
    console.print(grid)


@contextmanager
def transfer_progress(description: str, total: int) -> Iterator[Any]:
    """A byte progress bar on stderr; yields ``advance(n)``. Silent when not a terminal."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def configure_logging(level: str) -> None:
    """One log format for the long-running commands (hub, site, gateway serve). The HTTP
    client's own INFO line per request is held back: a site long-polls and reports every
    few seconds, and those lines would bury the ones worth reading (``--log-level debug``
    shows them)."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if level.lower() != "debug":
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


#: ``--insecure-http-allow-remote``, shared by every command that can serve plain HTTP.
AllowRemoteOpt = Annotated[
    bool,
    typer.Option(
        "--insecure-http-allow-remote",
        help="With --insecure-http: allow it on a non-loopback interface too.",
    ),
]


def check_plain_http(host: str, insecure_http: bool, allow_remote: bool) -> None:
    """Plain HTTP only when asked for, and on loopback unless asked for twice."""
    if allow_remote and not insecure_http:
        raise InvalidInput("--insecure-http-allow-remote only makes sense with --insecure-http")
    if insecure_http and not allow_remote and not is_loopback(host):
        raise InvalidInput(
            f"refusing plain HTTP on {host}: tokens and models would cross the network in "
            "clear; drop --insecure-http (HTTPS is the default), or add "
            "--insecure-http-allow-remote if something else encrypts the link"
        )


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
