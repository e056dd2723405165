"""Certificates for the TLS rows of ``bench/serve.py``, made the way a fleet makes them.

A hub is initialised and started with TLS (its fleet CA), a site is added and enrolled by a
real ``modelfleet site serve`` process: the certificate the benchmark's modelfleet server
then presents is that site's own (``tls/site.pem``, issued from the site's CSR), with the
site's server context (:meth:`~modelfleet.site.identity.SiteIdentity.server`: client
certificates asked for, not required). The hub and the site are stopped once enrolled, so
they take no CPU while the load runs.

MLServer gets a certificate from the same CA (a P-256 key, as the site's), so the two
servers differ only in the server, not in the key type or chain length.

MLServer 1.7 has no TLS field in its ``settings.json``: its REST server passes
``Settings._custom_rest_server_settings`` (a private attribute, which the settings file
cannot set) into ``uvicorn.Config``. :data:`MLSERVER_TLS_LAUNCHER` does what
``mlserver start`` does and sets uvicorn's ``ssl_certfile``/``ssl_keyfile`` there, the way
MLServer's own code reads them.
"""

from __future__ import annotations

import ssl
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

__all__ = ["MLSERVER_TLS_LAUNCHER", "BenchCerts", "make_certs"]


@dataclass(frozen=True)
class BenchCerts:
    """The fleet CA, the enrolled site's server files, and MLServer's pair."""

    ca_file: Path
    site_cert: Path
    site_key: Path
    mlserver_cert: Path
    mlserver_key: Path

    def client_context(self) -> ssl.SSLContext:
        """What a client of either server verifies against: the fleet CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_certs(workdir: Path) -> BenchCerts:
    """Hub with TLS, one enrolled site; then MLServer's certificate from the same CA."""
    from cryptography.hazmat.primitives import serialization

    from modelfleet.hub.bootstrap import init_hub
    from modelfleet.hub_client import HubClient
    from modelfleet.pki.ca import FleetCA
    from modelfleet.pki.identity import site_identity
    from modelfleet.pki.keys import generate_key
    from modelfleet.sim.launcher import HubProcess, SiteProcess
    from modelfleet.site.identity import SiteIdentity

    hub_dir = workdir / "hub"
    init = init_hub(hub_dir)
    hub = HubProcess(hub_dir, tls=True, log_path=workdir / "hub.log").start()
    site: SiteProcess | None = None
    try:
        with HubClient(hub.url, init.admin_token, ca_file=hub.ca_file) as admin:
            created = admin.add_site("bench", {})
        site = SiteProcess(workdir / "site-bench", hub.url, created["enrollment_token"])
        site.start()  # returns once it serves HTTPS with its new certificate
    finally:
        if site is not None:
            site.stop()
        hub.stop()
    files = SiteIdentity(workdir / "site-bench").server()

    ca = FleetCA.load(hub_dir / "tls")
    key = generate_key()
    issued = ca.issue_for_key(
        key, site_identity("mlserver"), ("127.0.0.1", "localhost"), timedelta(days=1)
    )
    ml_dir = workdir / "mlserver-tls"
    ml_dir.mkdir()
    ml_cert, ml_key = ml_dir / "server.pem", ml_dir / "server.key"
    ml_cert.write_bytes(issued.pem)
    ml_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ml_key.chmod(0o600)
    return BenchCerts(hub.ca_file, files.cert_file, files.key_file, ml_cert, ml_key)


#: Run with MLServer's venv python as ``python launcher.py FOLDER CERT KEY``: ``mlserver
#: start FOLDER`` (the same logging and uvloop set-up as its CLI's ``main``) with TLS.
MLSERVER_TLS_LAUNCHER = """
import asyncio
import sys

from mlserver import MLServer
from mlserver.cli.serve import load_settings
from mlserver.logging import configure_logger
from mlserver.utils import install_uvloop_event_loop


async def start(folder, cert, key):
    settings, models = await load_settings(folder)
    settings._custom_rest_server_settings = {"ssl_certfile": cert, "ssl_keyfile": key}
    await MLServer(settings).start(models)


# Guarded: MLServer's inference pool spawns workers that import this file again.
if __name__ == "__main__":
    configure_logger()
    install_uvloop_event_loop()
    asyncio.run(start(*sys.argv[1:4]))
"""
