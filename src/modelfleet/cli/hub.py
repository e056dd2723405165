"""``modelfleet hub init|serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelfleet.cli.common import (
    AllowRemoteOpt,
    ReadyFileOpt,
    check_plain_http,
    configure_logging,
    say,
    styled,
)
from modelfleet.settings import DEFAULT_HUB_PORT, HubSettings, default_data_dir

app = typer.Typer(help="Create and run the hub (the control plane).", no_args_is_help=True)

DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="MODELFLEET_HUB_DATA_DIR",
        help="Hub data directory (signing key, config, default SQLite DB and artifacts). "
        "Default: ~/.local/share/modelfleet/hub.",
        show_default=False,
    ),
]


@app.command()
def init(
    data_dir: DataDirOpt = None,
    db: Annotated[
        str | None,
        typer.Option(help="State DB URL (default: SQLite in the data dir), e.g. postgresql://..."),
    ] = None,
    artifacts: Annotated[
        str | None,
        typer.Option(help="Artifact store: a directory or fsspec URL such as s3://bucket/prefix."),
    ] = None,
    san: Annotated[
        list[str] | None,
        typer.Option(
            "--hostname",
            "--san",
            metavar="NAME",
            help="A name or address sites and clients reach the hub at (repeatable); its "
            "certificate carries them besides loopback and this machine's host name.",
        ),
    ] = None,
    admin_token_ttl: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Lifetime of the first admin token: 12h, 30d... (default "
            "$MODELFLEET_HUB_ADMIN_TOKEN_TTL_S, 30 days).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create the data directory, the signing key set, the fleet CA with the hub's TLS
    certificate, and the first admin token.

    The admin token is printed once and never stored in clear: keep it safe. It expires
    (30 days by default): create the admins you need with `modelfleet token create --role
    admin`; if every admin token is lost or expired, `modelfleet hub token recover` on
    this machine mints a new one.

    \b
    Examples:
      modelfleet hub init --data-dir ./hub --hostname hub.example.com
      modelfleet hub init --db postgresql://modelfleet@db/modelfleet
    """
    from modelfleet.hub.bootstrap import init_hub

    root = (data_dir or default_data_dir()).expanduser().resolve()
    result = init_hub(
        root, db=db, artifacts=artifacts, hosts=tuple(san or ()), admin_ttl=admin_token_ttl
    )
    say(styled(("hub initialised", "green"), f" in {result.data_dir}"))
    say(f"  database   {result.db_url}")
    say(f"  artifacts  {result.artifacts_url}")
    say(f"  signing key id {result.key_id}")
    say(f"  fleet CA   {result.ca_file}")
    say(f"             fingerprint {result.ca_fingerprint}")
    say(
        f"             clients verify the hub with it: export MODELFLEET_CA_FILE={result.ca_file}",
    )
    say(
        f"\nAdmin token (shown once, only its hash is stored; expires "
        f"{result.admin_expires_at:%Y-%m-%d %H:%M:%S} UTC):\n"
    )
    typer.echo(result.admin_token)
    say(
        f"\nNext: modelfleet hub serve --data-dir {result.data_dir}\n"
        f"      export MODELFLEET_TOKEN=<the token above>"
    )


@app.command()
def serve(
    data_dir: DataDirOpt = None,
    db: Annotated[
        str | None, typer.Option(help="Override the DB URL recorded by `hub init`.")
    ] = None,
    artifacts: Annotated[
        str | None, typer.Option(help="Override the artifact store recorded by `hub init`.")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="TCP port (0: any free port).", min=0, max=65535)
    ] = DEFAULT_HUB_PORT,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    ready_file: ReadyFileOpt = None,
    insecure_http: Annotated[
        bool,
        typer.Option(
            "--insecure-http",
            help="Serve plain HTTP instead of HTTPS (tokens and models travel in clear). "
            "Refused on a non-loopback --host unless --insecure-http-allow-remote.",
        ),
    ] = False,
    allow_remote: AllowRemoteOpt = False,
) -> None:
    """Run the hub's API over HTTPS (OpenAPI at /docs, Prometheus at /metrics).

    The certificate comes from the fleet CA in the data directory (renewed here when due);
    sites authenticate with their client certificates on the same port.

    Examples:

      modelfleet hub serve --data-dir ./hub-data

      modelfleet hub serve --data-dir ./hub-data --host 0.0.0.0 --port 8700

    \b
    Examples:
      modelfleet hub serve --data-dir ./hub --host 0.0.0.0 --port 8700
    """
    import uvicorn

    from modelfleet.hub.app import answer_long_polls, build_context, create_app
    from modelfleet.transport.graceful import GracefulServer
    from modelfleet.transport.listen import bind, bound_port, report_ready
    from modelfleet.transport.uvicorn_tls import uvicorn_tls_options

    check_plain_http(host, insecure_http, allow_remote)
    sock = bind(host, port)  # before anything else: a taken port fails fast
    port = bound_port(sock)
    overrides: dict[str, object] = {"host": host, "port": port}
    if data_dir is not None:
        overrides["data_dir"] = data_dir.expanduser().resolve()
    if db is not None:
        overrides["db"] = db
    if artifacts is not None:
        overrides["artifacts"] = artifacts
    settings = HubSettings().model_copy(update=overrides)
    configure_logging(log_level)
    ctx = build_context(settings)
    scheme = "http" if insecure_http else "https"
    tls = None if insecure_http else ctx.data_dir.tls.server_files()
    say(
        f"hub on {scheme}://{host}:{port}  db={ctx.store.url}  artifacts={ctx.artifacts.url}"
        + ("" if tls else "  (PLAIN HTTP: --insecure-http)"),
        err=True,
    )
    if tls is not None:
        say(f"fleet CA: {ctx.data_dir.tls.ca_file}", err=True)
    config = uvicorn.Config(
        create_app(ctx),
        log_level=log_level,
        access_log=False,
        # A safety net only: held long-polls are answered as the stop begins.
        timeout_graceful_shutdown=3,
        **uvicorn_tls_options(tls),
    )
    report_ready(sock, ready_file)
    server = GracefulServer(config, before_drain=lambda: answer_long_polls(ctx))
    server.run(sockets=[sock])
    if not server.started:
        raise typer.Exit(3)  # as uvicorn.run: the app failed to start
