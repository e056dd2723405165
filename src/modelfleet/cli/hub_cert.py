"""``modelfleet hub cert issue``: a gateway's certificate from the fleet CA, on the hub's
data directory.

Like ``hub key``, this acts on the files, not through the API: the CA key never leaves the
data directory and whoever can read it is trusted to mint certificates (the root of trust),
so no token, however privileged, can get a certificate over the network. Run it again
before the certificate expires (``--out`` the same directory): the gateway picks the new
one up at its next handshake (presented from the connection after it), without a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelfleet.cli.common import JsonOpt, print_json, say, styled
from modelfleet.cli.hub import DataDirOpt
from modelfleet.settings import default_data_dir

app = typer.Typer(
    help="Certificates from the fleet CA for gateways (sites get theirs at enrollment).",
    no_args_is_help=True,
)

#: A gateway certificate's default life: renewed by re-running the command, so months.
DEFAULT_DAYS = 90


@app.command("issue")
def issue(
    name: Annotated[
        str, typer.Option("--name", help="The gateway's name: its certificate names it.")
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Directory to write cert.pem, key.pem (0600) and ca.pem to; an existing "
            "certificate there is replaced (renewal).",
        ),
    ],
    data_dir: DataDirOpt = None,
    san: Annotated[
        list[str] | None,
        typer.Option(
            "--san",
            "--hostname",
            metavar="HOST",
            help="A DNS name or IP address clients reach the gateway at (repeatable; "
            "localhost and 127.0.0.1 are always included).",
        ),
    ] = None,
    days: Annotated[
        float, typer.Option(help="Validity in days (at most 397).", min=0.0001, max=397)
    ] = DEFAULT_DAYS,
    as_json: JsonOpt = False,
) -> None:
    """Sign a gateway certificate (modelfleet://gateway/NAME plus its host names) with
    the fleet CA in the hub's data directory.

    \b
    Examples:
      modelfleet hub cert issue --name edge-gw --out ./gw-tls --san gw.example.com
    """
    from datetime import timedelta

    from modelfleet.hub.datadir import DataDir
    from modelfleet.pki.certdir import CertDir, issue_to_dir
    from modelfleet.pki.identity import gateway_identity

    root = DataDir((data_dir or default_data_dir()).expanduser().resolve())
    root.read_config()  # one clear line when `hub init` never ran here
    identity = gateway_identity(name)
    hosts = tuple(dict.fromkeys(["localhost", "127.0.0.1", *(san or ())]))
    target = CertDir(out.expanduser().resolve())
    issued = issue_to_dir(root.tls.ca(), identity, hosts, target.root, timedelta(days=days))
    doc = {
        "identity": identity.uri,
        "hosts": list(hosts),
        "serial": issued.serial,
        "not_after": issued.not_after.isoformat(timespec="seconds"),
        "cert_file": str(target.cert_file),
        "key_file": str(target.key_file),
        "ca_file": str(target.ca_file),
    }
    if as_json:
        print_json(doc)
        return
    say(styled(("certificate issued", "green"), f" for {identity.uri}"))
    say(f"  hosts      {', '.join(hosts)}")
    say(f"  valid until {doc['not_after']}")
    say(f"  in {target.root} (cert.pem, key.pem 0600, ca.pem)")
    say(f"\nNext: modelfleet gateway serve --tls-dir {target.root} ...")
