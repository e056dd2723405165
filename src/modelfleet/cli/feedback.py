"""``modelfleet site feedback FILE --model M --site URL``: labels from a file to a site.

The batch form of ``POST /v2/models/{m}/feedback`` (docs/feedback.md): a CSV with the
columns ``id`` and ``label``, or JSON lines ``{"id": "...", "label": ...}``, sent to the
site in calls of at most 10 000 labels. The site joins them with its own predictions and
ships only counts to the hub; the file never leaves the machine it is read on except to
that site.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from modelfleet.cli.common import print_json, say
from modelfleet.errors import InvalidInput
from modelfleet.pki.tls import client_context
from modelfleet.settings import ClientSettings

#: Labels read from one file at most (a larger file: split it, or post in several runs).
MAX_FILE_LABELS = 10_000_000


def _label(text: str) -> str | int | float:
    """A CSV cell: an integer or a number when it reads as one, else a class name."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            continue
    return text


def read_labels(path: Path) -> Iterator[tuple[str, Any]]:
    """``(id, label)`` per line of a ``.csv`` (header ``id,label``) or ``.jsonl`` file."""
    suffix = path.suffix.lower()
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        if suffix == ".csv":
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"id", "label"} <= set(reader.fieldnames):
                raise InvalidInput(f"{path}: the CSV needs a header with columns id and label")
            for line, row in enumerate(reader, start=2):
                if not row.get("id") or row.get("label") in (None, ""):
                    raise InvalidInput(f"{path}:{line}: id and label must both be set")
                yield str(row["id"]), _label(str(row["label"]))
        elif suffix in (".jsonl", ".ndjson"):
            for line, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    doc = json.loads(text)
                except ValueError as exc:
                    raise InvalidInput(f"{path}:{line}: not JSON: {exc}") from exc
                if not isinstance(doc, dict) or "id" not in doc or "label" not in doc:
                    raise InvalidInput(f'{path}:{line}: expected {{"id": ..., "label": ...}}')
                yield str(doc["id"]), doc["label"]
        else:
            raise InvalidInput(f"{path}: use a .csv (id,label) or .jsonl file")


def _counted(path: Path) -> Iterator[tuple[str, Any]]:
    for count, pair in enumerate(read_labels(path), start=1):
        if count > MAX_FILE_LABELS:
            raise InvalidInput(f"{path}: more than {MAX_FILE_LABELS} labels; split the file")
        yield pair


def feedback(
    file: Annotated[Path, typer.Argument(help="Labels: .csv with columns id,label or .jsonl.")],
    model: Annotated[str, typer.Option("--model", "-m", help="The model the labels are for.")],
    site: Annotated[
        str,
        typer.Option("--site", help="The site's URL (where the predictions were served)."),
    ] = "https://127.0.0.1:8800",
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="MODELFLEET_TOKEN", help="An infer token that may call the model."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the totals as JSON.")] = False,
) -> None:
    """Send labels for past predictions to the site that served them (counts only reach
    the hub). Labels of unknown ids, of predictions older than the site's feedback window
    or already labelled are counted as dropped, by reason.

    \b
    Examples:
      modelfleet site feedback failures.csv --model machine-health --site https://plant-1:8800
      modelfleet site feedback labels.jsonl -m churn --site https://eu-1:8800 --json
    """
    settings = ClientSettings()
    verify = client_context(settings.ca_file)  # the fleet CA (MODELFLEET_CA_FILE) or roots
    # Imported here, not at the top: every command would pay for its imports at start.
    from modelfleet.sim.feedback import send_labels

    totals = send_labels(site, model, _counted(file), token=token, verify=verify).to_dict()
    if json_out:
        print_json(totals)
        return
    dropped = ", ".join(f"{k} {v}" for k, v in totals["dropped"].items() if v) or "none"
    say(f"{totals['accepted']} label(s) accepted for {model}; dropped: {dropped}")
