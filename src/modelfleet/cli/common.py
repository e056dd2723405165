"""Shared CLI pieces: hub connection options, output as table or JSON, progress bars.

Every line a command prints goes through :func:`say`, :func:`warn` or :func:`table`: they
print text as text (no rich markup, so ``pip install 'modelfleet[postgres]'`` keeps its
brackets) and keep tables inside the terminal's width.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from pydantic import BaseModel, ValidationError
from rich.cells import cell_len
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
from rich.text import Text

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
        help="Hub base URL, e.g. https://hub.example:8700 (without /api/v1).",
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
    """A hub client for ``--hub``; a URL that is not the hub's base is refused here, in
    words, rather than by the hub's "Not Found" on every call."""
    check_hub_url(hub)
    return HubClient(hub, token)


def check_hub_url(url: str) -> None:
    """``--hub`` must be the hub's base URL: http(s), a host, no ``/api/...`` path."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise InvalidInput(
            f"--hub {url!r} is not a hub URL: expected http(s)://HOST:PORT, "
            "e.g. https://127.0.0.1:8700"
        )
    path = parts.path.rstrip("/")
    if path.split("/")[1:2] == ["api"]:
        base = f"{parts.scheme}://{parts.netloc}{path[: path.index('/api')]}"
        raise InvalidInput(
            f"--hub {url!r}: the hub URL is the base, without /api/v1 (use --hub {base})"
        )


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


def validation_message(exc: ValidationError) -> str:
    """A pydantic error as one line without its URL, the field named as the option that
    usually sets it: ``--batch-size: Input should be greater than or equal to 1 (got 0)``.
    The last net under a value a command passed on to a validated record unchecked."""
    parts = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err.get("loc", ()))
        where = "--" + field.replace("_", "-") if field else "value"
        got = f" (got {err['input']!r})" if "input" in err and err["type"] != "missing" else ""
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}{got}")
    return "; ".join(parts)


def say(text: str | Text, style: str | None = None, *, err: bool = False) -> None:
    """Print one message as plain text: brackets stay brackets (no rich markup), long lines
    are not wrapped (a path, URL or token in a message must survive whole, and a script
    reading the output gets one line per message). ``text`` may be :func:`styled`."""
    target = err_console if err else console
    line = text if isinstance(text, Text) else Text(text, style=style or "")
    target.print(line, soft_wrap=True, highlight=False)


def warn(text: str) -> None:
    """``warning: ...`` on stderr, so ``--json`` output stays the document alone."""
    err_console.print(
        Text.assemble(("warning:", "yellow"), " ", text), soft_wrap=True, highlight=False
    )


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line with styled parts, e.g. ``styled(("pushed", "bold"), " ", name)``: user text
    is never read as markup."""
    return Text.assemble(*parts)


@dataclass(frozen=True)
class Col:
    """A table column. ``keep``: printed whole whatever the width (an id or name a user
    copies into the next command). ``free``: free text (labels, details, model lists), the
    first to give way; the other columns (figures, states, times) are cut only when cutting
    the free ones is not enough. A cut cell ends in an ellipsis."""

    header: str
    keep: bool = False
    free: bool = False


#: The narrowest a column is cut to (or its header, when wider).
_MIN_CELL = 6


def _cell(value: Any) -> Text:
    if isinstance(value, Text):
        return value
    return Text("-" if value is None else str(value))


def _share(natural: list[int], floors: list[int], fixed: list[bool], room: int) -> list[int]:
    """Widths within ``room``: ``fixed`` columns whole, the others share what is left; the
    narrow ones keep their natural width and the widest are cut first (to their floor)."""
    widths = list(natural)
    budget = room - sum(w for w, f in zip(natural, fixed, strict=True) if f)
    flexible = sorted((w, i) for i, (w, f) in enumerate(zip(natural, fixed, strict=True)) if not f)
    left = len(flexible)
    for width, index in flexible:
        widths[index] = min(width, max(floors[index], budget // left))
        budget -= widths[index]
        left -= 1
    return widths


def _fit(natural: list[int], floors: list[int], cols: list[Col], room: int) -> list[int]:
    """Cut the free-text columns first; the other columns too only if that is not enough."""
    widths = natural
    for fixed in ([c.keep or not c.free for c in cols], [c.keep for c in cols]):
        widths = _share(natural, floors, fixed, room)
        if sum(widths) <= room:
            break
    return widths


def ago(value: Any, now: datetime | None = None) -> str:
    """How long ago, in the largest unit that fits (``4s ago``, ``12m ago``, ``2d ago``): a
    column of ages reads at a glance where a column of timestamps needs arithmetic."""
    if not value:
        return "never"
    now = now or datetime.now(UTC)
    try:
        then = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    seconds = max(0.0, (now - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def table(
    title: str | None,
    columns: Sequence[str | Col],
    rows: Sequence[Sequence[Any]],
    *,
    empty: str | None = None,
    cut_hint: str = "--json prints every field whole",
) -> None:
    """A table that fits the terminal (see :class:`Col` for which columns give way); a note
    under a table with a cut cell says where the whole text is. Cells are text, never
    markup; a :class:`rich.text.Text` cell keeps its style. With no rows and an ``empty``
    hint, the hint is printed instead of an empty frame."""
    if not rows and empty is not None:
        say(empty)
        return
    cols = [c if isinstance(c, Col) else Col(c) for c in columns]
    cells = [[_cell(value) for value in row] for row in rows]
    natural = [
        max([cell_len(c.header)] + [max(map(cell_len, row[i].plain.split("\n"))) for row in cells])
        for i, c in enumerate(cols)
    ]
    floors = [min(n, max(len(c.header), _MIN_CELL)) for n, c in zip(natural, cols, strict=True)]
    room = console.width - 2 * (len(cols) - 1)  # no borders: two spaces between columns
    widths = _fit(natural, floors, cols, room)
    grid = Table(
        title=title,
        box=None,
        pad_edge=False,
        header_style="bold underline",
        title_justify="left",
        title_style="bold",
    )
    for col, width in zip(cols, widths, strict=True):
        grid.add_column(
            col.header, width=width, no_wrap=True, overflow="fold" if col.keep else "ellipsis"
        )
    for row in cells:
        grid.add_row(*row)
    console.print(grid)
    if widths != natural:
        say(f"(… cut to fit {console.width} columns: {cut_hint})", "dim")


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


#: What ``--log-level`` takes (the long-running commands').
LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(level: str) -> None:
    """One log format for the long-running commands (hub, site, gateway serve). The HTTP
    client's own INFO line per request is held back: a site long-polls and reports every
    few seconds, and those lines would bury the ones worth reading (``--log-level debug``
    shows them)."""
    if level.lower() not in LOG_LEVELS:
        raise InvalidInput(f"--log-level {level!r}: use one of {', '.join(LOG_LEVELS)}")
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


def storage_lines(storage: object) -> list[str]:
    """A site's reported full disks, one line per store ("disk full at spool: 12 telemetry
    windows dropped"); the site wrote the message, so only strings are shown."""
    if not isinstance(storage, dict):
        return []
    lines = []
    for name in sorted(storage):
        entry = storage[name]
        message = entry.get("message") if isinstance(entry, dict) else None
        if isinstance(message, str) and message:
            lines.append(message[:500])
    return lines
