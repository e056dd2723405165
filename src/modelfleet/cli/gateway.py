"""``modelfleet gateway serve``: an OIP endpoint that routes to the best permitted site."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelfleet.cli.common import (
    DEFAULT_HUB,
    AllowRemoteOpt,
    HubOpt,
    ReadyFileOpt,
    TokenOpt,
    check_plain_http,
    configure_logging,
    err_console,
)
from modelfleet.errors import InvalidInput
from modelfleet.settings import DEFAULT_GATEWAY_PORT

app = typer.Typer(help="Route Open Inference Protocol requests across sites.", no_args_is_help=True)


@app.command()
def serve(
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).")] = DEFAULT_GATEWAY_PORT,
    data_region: Annotated[
        str | None,
        typer.Option(
            "--data-region",
            help="Data region of requests without an x-modelfleet-data-region header "
            "(default: such requests are refused).",
        ),
    ] = None,
    residency: Annotated[
        Path | None,
        typer.Option(
            help="Local YAML/JSON rules {rules: {UK: [UK]}} that narrow the fleet's residency "
            "policies (from the hub's directory); they never add a jurisdiction. See "
            "docs/residency.md.",
        ),
    ] = None,
    sites: Annotated[
        Path | None,
        typer.Option(
            help="Static YAML/JSON list of sites [{name, url, labels, models}] instead of "
            "the hub's directory; as {sites: [...], policies: [...]} it carries residency "
            "policies too (the `policy apply -f` format)."
        ),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="Directory cache file: sites and residency policies, for a hub outage "
            "(default: $MODELFLEET_CACHE_DIR or ~/.cache/modelfleet, one file per hub)."
        ),
    ] = None,
    deadline: Annotated[float, typer.Option(help="Per-request deadline in seconds.")] = 10.0,
    no_hedge: Annotated[bool, typer.Option("--no-hedge", help="Disable hedging.")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
    ready_file: ReadyFileOpt = None,
    tls_dir: Annotated[
        Path | None,
        typer.Option(
            "--tls-dir",
            envvar="MODELFLEET_GATEWAY_TLS_DIR",
            help="The gateway's certificate directory (cert.pem, key.pem, ca.pem), from "
            "`modelfleet hub cert issue --out DIR`; a replaced certificate is used without "
            "a restart.",
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file",
            envvar="MODELFLEET_CA_FILE",
            help="The fleet CA the hub and the sites are verified against (default: the "
            "--tls-dir's ca.pem).",
        ),
    ] = None,
    insecure_http: Annotated[
        bool,
        typer.Option(
            "--insecure-http",
            help="Serve plain HTTP instead of HTTPS (requests and answers travel in clear). "
            "Refused on a non-loopback --host unless --insecure-http-allow-remote.",
        ),
    ] = False,
    allow_remote: AllowRemoteOpt = False,
) -> None:
    """Serve /v2 (infer, metadata, ready, health) and route each request to the nearest site
    allowed to see its data; /metrics and /healthz show the router's view.

    HTTPS by default, with the certificate in --tls-dir; sites are verified against the
    fleet CA and must present the certificate of the site chosen.

    \b
    Examples:
      modelfleet gateway serve --tls-dir ./gw-tls --hub https://hub:8700 \
          --token $GATEWAY_INFER_TOKEN
      modelfleet gateway serve --tls-dir ./gw-tls --sites sites.yaml --data-region EU
    """
    from modelfleet.pki.certdir import CertDir
    from modelfleet.pki.tls import TlsFiles
    from modelfleet.routing.directory import SiteDirectory
    from modelfleet.routing.gateway import Gateway
    from modelfleet.routing.gateway import serve as run
    from modelfleet.routing.gateway_access import GatewayAccess, default_grants_cache
    from modelfleet.routing.residency import ResidencyRules
    from modelfleet.routing.router import Router, RoutingOptions
    from modelfleet.transport.listen import bind, bound_port, report_ready
    from modelfleet.transport.session import HubSession
    from modelfleet.yamlfile import load_yaml

    check_plain_http(host, insecure_http, allow_remote)
    if insecure_http and tls_dir is not None:
        raise InvalidInput("--tls-dir and --insecure-http contradict each other: choose one")
    if not insecure_http and tls_dir is None:
        raise InvalidInput(
            "the gateway serves HTTPS: give --tls-dir DIR (a certificate from `modelfleet "
            "hub cert issue --name NAME --out DIR`), or --insecure-http for plain HTTP"
        )
    certs = CertDir(tls_dir.expanduser().resolve()).check() if tls_dir is not None else None
    ca = ca_file or (certs.ca_file if certs is not None else None)
    sock = bind(host, port)  # first: a taken port fails fast; port 0 picks a free one
    port = bound_port(sock)

    if sites is not None:
        doc = load_yaml(sites, "site list")
        items = doc.get("sites") if isinstance(doc, dict) else doc
        if not isinstance(items, list):
            raise InvalidInput(f"{sites}: expected a list of sites (or {{sites: [...]}})")
        policies = doc.get("policies", []) if isinstance(doc, dict) else []
        if not isinstance(policies, list):
            raise InvalidInput(f"{sites}: 'policies' must be a list of residency policies")
        directory = SiteDirectory(sites=items, policies=policies)
        access = None  # no hub, no grant list: callers' credentials go through to the sites
    else:
        if not token:
            raise InvalidInput(
                "the gateway needs its own infer token (--token or MODELFLEET_TOKEN; "
                "`modelfleet token create --role infer --name gateway`): it reads the "
                "directory and its grant list with it and calls sites with it"
            )
        directory = SiteDirectory(hub_url=hub, token=token, cache_path=cache, tls=TlsFiles(ca))
        access = GatewayAccess(
            HubSession(hub, token, tls=TlsFiles(ca), timeout=5.0),
            default_grants_cache(directory.cache_path),
        )
    rules = ResidencyRules.from_file(residency) if residency else ResidencyRules()
    router = Router(
        directory,
        rules=rules,
        options=RoutingOptions(deadline_s=deadline, hedge=not no_hedge),
        token=token if access is not None else None,
        # Sites see the gateway's own certificate (mTLS) when it has one.
        tls=certs.client(ca) if certs is not None else TlsFiles(ca),
    )
    configure_logging(log_level)
    source = (
        f"{len(directory.sites)} static sites"
        if sites
        else f"hub {hub} (directory cached at {directory.cache_path})"
    )
    scheme = "https" if certs is not None else "http"
    err_console.print(
        f"gateway on {scheme}://{host}:{port}  routing from {source}  "
        f"default data region {data_region or '(none: header required)'}"
        + ("" if certs is not None else "  (PLAIN HTTP: --insecure-http)"),
        highlight=False,
    )
    report_ready(sock, ready_file)
    server_tls = certs.server() if certs is not None else None
    gateway = Gateway(router, default_region=data_region, access=access)
    run(gateway, host, port, log_level, sock=sock, tls=server_tls)
