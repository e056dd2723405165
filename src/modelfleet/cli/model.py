"""``modelfleet model push|ls|show|alias|pull``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

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
    styled,
    table,
    transfer_progress,
    when,
)
from modelfleet.errors import InvalidInput
from modelfleet.refs import parse_ref

app = typer.Typer(help="Push, inspect, alias and pull model versions.", no_args_is_help=True)


def _signature(io: dict[str, Any]) -> str:
    def one(spec: dict[str, Any]) -> str:
        shape = ",".join("?" if d == -1 else str(d) for d in spec.get("shape") or [])
        return f"{spec['name']}:{spec.get('datatype') or spec.get('onnx_type')}[{shape}]"

    ins = " ".join(one(s) for s in io.get("inputs", []))
    outs = " ".join(one(s) for s in io.get("outputs", []))
    return f"{ins} -> {outs}"


@app.command()
def push(
    file: Annotated[Path, typer.Argument(help="The ONNX file to upload.", show_default=False)],
    name: Annotated[str, typer.Option("--name", "-n", help="Model name.")],
    training_region: Annotated[
        list[str] | None,
        typer.Option(
            "--training-region",
            metavar="REGION",
            help="Region the training data came from (repeatable); residency rules use it.",
        ),
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    framework: Annotated[
        str | None, typer.Option(help="Override the framework read from the file.")
    ] = None,
    parent: Annotated[
        int | None, typer.Option(help="Lineage: the version this derives from.", min=1)
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option(metavar="KEY=VALUE", help="key=value (repeatable).")
    ] = None,
    metrics: Annotated[
        str | None, typer.Option(help="JSON object of numbers, e.g. '{\"accuracy\": 0.97}'.")
    ] = None,
    reference_data: Annotated[
        Path | None,
        typer.Option(
            "--reference-data",
            help="Training data CSV (with a header): its sketches are computed here and "
            "stored with the version as the drift reference; no row is uploaded.",
        ),
    ] = None,
    reference_column: Annotated[
        list[str] | None,
        typer.Option(
            "--reference-column",
            metavar="COLUMN",
            help="Feature column of --reference-data, in model input order (repeatable; "
            "default: every column).",
        ),
    ] = None,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Upload FILE as the next version of a model (validated and signed by the hub).

    \b
    Examples:
      modelfleet model push model.onnx -n machine-health --alias production \\
          --training-region eu-west --reference-data train.csv
    """
    if not file.is_file():
        raise InvalidInput(f"{file}: no such file")
    reference = None
    if reference_data is not None:
        # Before the upload: a CSV that does not fit the model must not leave a version.
        from modelfleet.monitoring.profiles import profile_csv
        from modelfleet.registry.onnx_info import inspect_onnx

        signature = inspect_onnx(file).io
        reference = profile_csv(
            reference_data, columns=reference_column, inputs=signature.get("inputs", [])
        ).to_dict()
    parsed_tags: dict[str, str] = {}
    for item in tag or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"invalid --tag {item!r}: expected key=value")
        parsed_tags[key] = value
    parsed_metrics = None
    if metrics:
        try:
            parsed_metrics = json.loads(metrics)
        except ValueError as exc:
            raise InvalidInput(f"--metrics is not JSON: {exc}") from exc
    with (
        client(hub, token) as hc,
        transfer_progress(f"push {file.name}", file.stat().st_size) as adv,
    ):
        version = hc.push(
            file,
            name,
            training_regions=training_region or [],
            alias=alias,
            description=description,
            framework=framework,
            parent=parent,
            tags=parsed_tags,
            metrics=parsed_metrics,
            progress=adv,
        )
        profile = None
        if reference is not None:
            profile = hc.set_reference_profile(version.model, version.version, reference)
    if json_out:
        data = jsonable(version)
        if profile is not None:
            data["reference_profile"] = jsonable(profile)["columns"]
        print_json(data)
        return
    if reference is not None:
        say(
            f"reference profile: {len(reference['columns'])} feature sketches from {reference_data}"
        )
    aliases = f" @{', @'.join(version.aliases)}" if version.aliases else ""
    say(
        styled(
            "pushed ",
            (f"{version.model}:{version.version}", "bold"),
            f"{aliases}  sha256:{version.digest[:12]}  {version.size} bytes  signed",
        )
    )


@app.command("ls")
def list_models(
    hub: HubOpt = DEFAULT_HUB, token: TokenOpt = None, json_out: JsonOpt = False
) -> None:
    """List models with their latest version and aliases.

    \b
    Examples:
      modelfleet model ls
    """
    with client(hub, token) as hc:
        models = hc.list_models()
    if json_out:
        print_json(models)
        return
    rows = [
        (
            m.name,
            m.latest_version,
            m.version_count,
            " ".join(f"{a}->{v}" for a, v in sorted(m.aliases.items())),
            when(m.created_at),
        )
        for m in models
    ]
    table(
        None,
        [Col("MODEL", keep=True), "LATEST", "VERSIONS", "ALIASES", "CREATED"],
        rows,
        empty="no models yet: modelfleet model push model.onnx -n NAME --alias production",
        cut_hint="modelfleet model show NAME prints one model whole",
    )


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="NAME, NAME:V or NAME@ALIAS.", show_default=False)],
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show a model's versions, or one version's details and signed manifest.

    \b
    Examples:
      modelfleet model show machine-health
      modelfleet model show machine-health@production
    """
    parsed = parse_ref(ref)
    with client(hub, token) as hc:
        if parsed.version is None and parsed.alias is None:
            model = hc.get_model(parsed.name)
            if json_out:
                print_json(model)
                return
            rows = [
                (
                    v.version,
                    " ".join(v.aliases),
                    v.digest[:12],
                    v.size,
                    ",".join(v.training_regions),
                    v.pushed_by,
                    when(v.created_at),
                )
                for v in model.versions
            ]
            table(
                model.name,
                ["VERSION", "ALIASES", "SHA256", "BYTES", "TRAINED IN", "PUSHED BY", "CREATED"],
                rows,
                cut_hint=f"modelfleet model show {model.name}:V prints one version whole",
            )
            return
        version = hc.resolve(ref)
    if json_out:
        print_json(version)
        return
    fields = [
        ("model", f"{version.model}:{version.version}"),
        ("aliases", " ".join(version.aliases) or "-"),
        ("digest", f"sha256:{version.digest}"),
        ("size", f"{version.size} bytes"),
        ("signature", _signature(version.io)),
        ("opset", version.opset),
        ("framework", version.framework or "-"),
        ("training regions", ", ".join(version.training_regions) or "-"),
        ("parent", version.parent_version or "-"),
        ("metrics", json.dumps(version.metrics) if version.metrics else "-"),
        ("tags", " ".join(f"{k}={v}" for k, v in version.tags.items()) or "-"),
        ("description", version.description or "-"),
        ("pushed", f"{when(version.created_at)} by {version.pushed_by}"),
    ]
    for label, value in fields:
        say(styled((f"{label:>16}", "bold"), f"  {value}"))


@app.command()
def alias(
    name: Annotated[str, typer.Argument(help="Model name.", show_default=False)],
    version: Annotated[
        int | None, typer.Argument(help="Version number.", show_default=False, min=1)
    ] = None,
    alias_name: Annotated[
        str | None,
        typer.Argument(metavar="ALIAS", help="Alias to set or move.", show_default=False),
    ] = None,
    delete: Annotated[
        str | None, typer.Option("--delete", help="Remove this alias instead.")
    ] = None,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
) -> None:
    """Point ALIAS at VERSION (`model alias N V ALIAS`), or remove one with --delete ALIAS.

    \b
    Examples:
      modelfleet model alias machine-health 3 production
      modelfleet model alias machine-health --delete canary
    """
    with client(hub, token) as hc:
        if delete is not None:
            hc.remove_alias(name, delete)
            say(f"removed {name}@{delete}")
            return
        if version is None or alias_name is None:
            raise InvalidInput(
                "usage: modelfleet model alias NAME VERSION ALIAS (or --delete ALIAS)"
            )
        hc.set_alias(name, alias_name, version)
    say(f"{name}@{alias_name} -> {version}")


@app.command()
def pull(
    ref: Annotated[str, typer.Argument(help="NAME, NAME:V or NAME@ALIAS.", show_default=False)],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Destination file (default NAME-V.onnx).")
    ] = None,
    public_key: Annotated[
        str | None,
        typer.Option(help="Pin the hub's public key (base64); default: the key the hub serves."),
    ] = None,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
) -> None:
    """Download a version and verify its digest and signed manifest; resumes if interrupted.

    \b
    Examples:
      modelfleet model pull machine-health@production -o model.onnx
    """
    with client(hub, token) as hc:
        version = hc.resolve(ref)
        dest = output or Path(f"{version.model}-{version.version}.onnx")
        with transfer_progress(f"pull {dest.name}", version.size) as adv:
            hc.pull(
                f"{version.model}:{version.version}",
                dest,
                public_key=public_key,
                progress=adv,
            )
    say(f"{dest}  {version.model}:{version.version}  sha256 and signature verified")
