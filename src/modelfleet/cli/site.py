"""``modelfleet site add|ls|show|assign|unassign|rm|serve``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import JsonValue

from modelfleet.api import Site
from modelfleet.cli.common import (
    DEFAULT_HUB,
    AllowRemoteOpt,
    Col,
    HubOpt,
    JsonOpt,
    ReadyFileOpt,
    TokenOpt,
    ago,
    check_plain_http,
    client,
    configure_logging,
    err_console,
    print_json,
    say,
    storage_lines,
    styled,
    table,
    when,
)
from modelfleet.cli.feedback import feedback as feedback_command
from modelfleet.errors import InvalidInput
from modelfleet.settings import DEFAULT_SITE_PORT

app = typer.Typer(help="Register sites, assign models, run a site agent.", no_args_is_help=True)


def _labels(items: list[str] | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"invalid --label {item!r}: expected key=value, e.g. region=eu-west")
        labels[key] = value
    return labels


def _error_field(error: JsonValue, key: str) -> JsonValue:
    """A field of a model's reported error (``{"code", "message"}``), None if absent."""
    return error.get(key) if isinstance(error, dict) else None


def _models_cell(site: Site) -> str:
    cells = []
    for m in site.models:
        active = m.active_version if m.active_version is not None else "-"
        text = f"{m.name}:{active} {m.state}"
        if m.assigned_version is not None and m.assigned_version != m.active_version:
            text += f" (wants {m.assigned_version})"
        if m.error:
            text += f" [{_error_field(m.error, 'code')}]"
        cells.append(text)
    return "\n".join(cells) or "-"


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="Site name.", show_default=False)],
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            "-l",
            metavar="KEY=VALUE",
            help="key=value (repeatable): region, jurisdiction, "
            "provider, tier, or any label of yours.",
        ),
    ] = None,
    reissue: Annotated[
        bool, typer.Option("--reissue", help="Issue a new enrollment token for an existing site.")
    ] = False,
    ttl: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Enrollment token lifetime: 90m, 12h, 2d or seconds (default 24 h, at most "
            "the hub's maximum, 7 d unless configured).",
            show_default=False,
        ),
    ] = None,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register a site and print its one-time enrollment token (expires, single use).

    \b
    Examples:
      modelfleet site add plant-eu-1 -l region=eu-west -l jurisdiction=EU
    """
    with client(hub, token) as hc:
        site = (
            hc.reissue_enrollment(name, enrollment_ttl_s=ttl)
            if reissue
            else hc.add_site(name, _labels(label), enrollment_ttl_s=ttl)
        )
    if json_out:
        print_json(site)
        return
    labels = " ".join(f"{k}={v}" for k, v in sorted(site.labels.items()))
    say(styled("site ", (site.name, "bold"), f" {labels}"))
    say(f"enrollment token (single use, expires {when(site.enrollment_expires_at)} UTC):")
    typer.echo(site.enrollment_token)
    say(
        f"on the site: modelfleet site serve --hub {hub} --enroll <token> "
        f"--state-dir ./{name}-state"
    )


@app.command("ls")
def list_sites(
    hub: HubOpt = DEFAULT_HUB, token: TokenOpt = None, json_out: JsonOpt = False
) -> None:
    """Every site: labels, online/offline, last seen, models and their state.

    \b
    Examples:
      modelfleet site ls
    """
    with client(hub, token) as hc:
        sites = hc.list_sites()
    if json_out:
        print_json(sites)
        return
    rows = [
        (
            s.name,
            " ".join(f"{k}={v}" for k, v in sorted(s.labels.items())),
            (styled(("online", "green")) if s.online else styled(("offline", "red")))
            if s.enrolled
            else "not enrolled",
            ago(s.last_seen),
            _models_cell(s),
        )
        for s in sites
    ]
    table(
        None,
        [
            Col("SITE", keep=True),
            Col("LABELS", free=True),
            "STATE",
            "LAST SEEN",
            Col("MODELS", free=True),
        ],
        rows,
        empty="no sites yet: modelfleet site add NAME -l region=eu-west -l jurisdiction=EU",
        cut_hint="modelfleet site show NAME prints one site whole",
    )


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Site name.", show_default=False)],
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One site in detail, with each model's desired/active version and last error.

    \b
    Examples:
      modelfleet site show plant-eu-1
    """
    with client(hub, token) as hc:
        site = hc.get_site(name)
    if json_out:
        print_json(site)
        return
    labels = " ".join(f"{k}={v}" for k, v in sorted(site.labels.items()))
    say(styled((site.name, "bold"), f"  {labels}"))
    state = "online" if site.online else ("offline" if site.enrolled else "not enrolled")
    say(f"  state {state}, last seen {when(site.last_seen)}, url {site.url or '-'}")
    say(
        f"  agent {site.agent_version or '-'}, uptime {site.uptime_s or '-'} s, "
        f"desired revision {site.revision} (applied {site.applied_revision or '-'})"
    )
    if site.decommissioned_at is not None:
        applied = isinstance(site.applied_revision, int) and site.applied_revision >= site.revision
        say(
            styled(
                "  ",
                ("decommissioned", "yellow"),
                f" {when(site.decommissioned_at)}: "
                + ("cache wiped" if applied else "the site has not applied it yet"),
            )
        )
    if site.desired_state_refused:
        say(styled("  ", ("refused its desired state:", "red"), f" {site.desired_state_refused}"))
    for line in storage_lines(site.storage):
        say(styled("  ", (line, "red" if line.startswith("disk full") else "yellow")))
    rows = [
        (
            m.name,
            m.ref,
            m.assigned_version,
            m.active_version,
            m.state,
            f"{_error_field(m.error, 'code')}: {_error_field(m.error, 'message')}"
            if m.error
            else None,
        )
        for m in site.models
    ]
    table(
        None,
        ["MODEL", "ASSIGNED AS", "DESIRED", "ACTIVE", "STATE", Col("ERROR", free=True)],
        rows,
        empty="no models assigned: modelfleet site assign NAME MODEL@ALIAS (or deploy)",
        cut_hint=f"modelfleet site show {name} --json prints every field whole",
    )


@app.command()
def assign(
    site: Annotated[str, typer.Argument(help="Site name.", show_default=False)],
    ref: Annotated[
        str, typer.Argument(metavar="MODEL", help="NAME, NAME:V or NAME@ALIAS.", show_default=False)
    ],
    params: Annotated[
        str | None, typer.Option(help="JSON serving parameters, e.g. '{\"max_batch_size\": 32}'.")
    ] = None,
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
) -> None:
    """Set the version a site should run (resolved now); the site picks it up in a second.

    \b
    Examples:
      modelfleet site assign plant-eu-1 machine-health@production
    """
    parsed: dict[str, Any] = {}
    if params:
        try:
            parsed = json.loads(params)
        except ValueError as exc:
            raise InvalidInput(f"--params is not JSON: {exc}") from exc
    with client(hub, token) as hc:
        item = hc.assign(site, ref, parsed)
    say(f"{site}: {item.model}:{item.version} (as {item.ref})")


@app.command()
def unassign(
    site: Annotated[str, typer.Argument(help="Site name.", show_default=False)],
    model: Annotated[str, typer.Argument(help="Model name.", show_default=False)],
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
) -> None:
    """Stop serving a model at a site.

    \b
    Examples:
      modelfleet site unassign plant-eu-1 machine-health
    """
    with client(hub, token) as hc:
        hc.unassign(site, model)
    say(f"{site}: {model} unassigned")


@app.command()
def decommission(
    name: Annotated[str, typer.Argument(help="Site name.", show_default=False)],
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
) -> None:
    """Take a site out of service: unassign every model and have the site delete their
    cached copies (a signed instruction; an empty assignment list alone keeps the cache).

    Deployments leave the site alone afterwards; assigning it a model puts it back in
    service. To forget the site too, wait until `site show` says it applied the
    decommission, then `site rm` it.

    \b
    Examples:
      modelfleet site decommission plant-eu-1
    """
    with client(hub, token) as hc:
        site = hc.decommission_site(name)
    say(
        f"{site.name}: decommissioned at revision {site.revision}; every model unassigned. "
        f"The site deletes its cached models when it takes that revision "
        f"(see `modelfleet site show {site.name}`)."
    )


@app.command("rm")
def remove(
    name: Annotated[str, typer.Argument(help="Site name.", show_default=False)],
    hub: HubOpt = DEFAULT_HUB,
    token: TokenOpt = None,
) -> None:
    """Remove a site and revoke its credential. The site is not told: to have it wipe its
    cached models first, `site decommission` it.

    \b
    Examples:
      modelfleet site rm plant-eu-1
    """
    with client(hub, token) as hc:
        hc.remove_site(name)
    say(f"removed site {name}")


@app.command()
def serve(
    hub: Annotated[
        str | None,
        typer.Option("--hub", envvar="MODELFLEET_HUB_URL", help="Hub URL (needed to enroll)."),
    ] = None,
    enroll: Annotated[
        str | None, typer.Option("--enroll", help="One-time enrollment token from `site add`.")
    ] = None,
    re_enroll: Annotated[
        bool,
        typer.Option(
            "--re-enroll",
            help="With --enroll on a state directory that is already enrolled: replace the "
            "CA and signing keys it pinned with what this hub presents.",
        ),
    ] = False,
    state_dir: Annotated[
        Path,
        typer.Option(
            envvar="MODELFLEET_SITE_STATE_DIR",
            help="Credentials, desired state and model cache live here.",
        ),
    ] = Path("./site-state"),
    host: Annotated[
        str, typer.Option(envvar="MODELFLEET_SITE_HOST", help="Interface of the inference server.")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            envvar="MODELFLEET_SITE_PORT", help="Port of the inference server (0: any free port)."
        ),
    ] = DEFAULT_SITE_PORT,
    public_url: Annotated[
        str | None,
        typer.Option(
            envvar="MODELFLEET_SITE_PUBLIC_URL",
            help="URL clients reach this site at (default http://HOST:PORT).",
        ),
    ] = None,
    policy_file: Annotated[
        Path | None,
        typer.Option(
            envvar="MODELFLEET_SITE_POLICY_FILE",
            help="Local governance file: the agent refuses models whose training regions it "
            "does not accept (see docs/deployments.md).",
        ),
    ] = None,
    cascade_file: Annotated[
        Path | None,
        typer.Option(
            envvar="MODELFLEET_SITE_CASCADE_FILE",
            help="Hybrid cloud-edge rules: escalate low-confidence answers to a cloud site "
            "(see docs/routing.md).",
        ),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="MODELFLEET_SITE_CONFIG_FILE",
            help="The site's own config: local data sets and federated-learning consent "
            "(see docs/federated.md).",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    ready_file: ReadyFileOpt = None,
    insecure_http: Annotated[
        bool,
        typer.Option(
            "--insecure-http",
            help="Accept serving plain HTTP, which a site of a hub run with --insecure-http "
            "does (it has no certificate). Refused on a non-loopback --host unless "
            "--insecure-http-allow-remote.",
        ),
    ] = False,
    allow_remote: AllowRemoteOpt = False,
) -> None:
    """Run a site agent: enroll once, then serve assigned models (OIP v2 under /v2).

    A site of an HTTPS hub serves HTTPS with the certificate it got at enrollment; plain
    HTTP (a hub run with --insecure-http) needs --insecure-http here too, as on the hub.

    \b
    Examples:
      modelfleet site serve --hub https://hub:8700 --enroll mfe_...@... --state-dir ./eu-state
      modelfleet site serve --state-dir ./eu-state --port 8800   # later starts: no token
    """
    from modelfleet.settings import SiteSettings
    from modelfleet.site.agent import SiteAgent
    from modelfleet.transport.listen import bind, bound_port, report_ready
    from modelfleet.transport.server import serve_http

    check_plain_http(host, insecure_http, allow_remote)
    if hub is not None:  # before enrolling: a refused start must not spend the token
        _check_site_scheme(hub, insecure_http)
    configure_logging(log_level)
    # Bound first (refusing connections until it listens): a taken port fails before the
    # agent enrolls, and with port 0 the agent reports the port the kernel chose.
    sock = bind(host, port)
    port = bound_port(sock)
    overrides: dict[str, object] = {"state_dir": state_dir.resolve(), "host": host, "port": port}
    if public_url is not None:
        overrides["public_url"] = public_url
    if policy_file is not None:
        overrides["policy_file"] = policy_file.resolve()
    if cascade_file is not None:
        overrides["cascade_file"] = cascade_file.resolve()
    if config_file is not None:
        overrides["config_file"] = config_file.resolve()
    settings = SiteSettings().model_copy(update=overrides)
    agent = SiteAgent(settings, hub_url=hub, enrollment_token=enroll, re_enroll=re_enroll)
    _check_site_scheme(agent.credentials.hub_url, insecure_http)
    restored = agent.start()
    tls = agent.server_tls()
    scheme = "https" if tls is not None else "http"
    plain = "" if tls is not None else " (plain HTTP: the hub runs with --insecure-http)"
    err_console.print(
        f"site {agent.site} serving on {scheme}://{host}:{port}/v2{plain} "
        f"(hub {agent.credentials.hub_url}); "
        f"restored from cache: {', '.join(restored) or 'nothing'}",
        highlight=False,
        soft_wrap=True,  # one line in a log file, whatever the terminal's width
    )
    try:
        report_ready(sock, ready_file)
        serve_http(
            agent.server.app(), host=host, port=port, log_level=log_level, sock=sock, tls=tls
        )
    finally:
        agent.stop()


def _check_site_scheme(hub_url: str, insecure_http: bool) -> None:
    """A site serves what its hub serves: plain HTTP only for an ``http://`` hub, and then
    only when the operator says so, as ``hub serve`` wants it said."""
    plain = hub_url.lower().startswith("http://")
    if plain and not insecure_http:
        raise InvalidInput(
            f"the hub {hub_url} is plain HTTP, so this site would serve plain HTTP too "
            "(inference data in clear): use the hub's https:// URL, or add --insecure-http"
        )
    if insecure_http and not plain:
        raise InvalidInput(
            f"--insecure-http: this site's hub {hub_url} is HTTPS, so the site serves HTTPS "
            "with its own certificate; drop the flag"
        )


app.command("feedback")(feedback_command)
