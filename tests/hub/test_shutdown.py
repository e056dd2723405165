"""A hub stopped with SIGTERM while a site long-polls it: answered, quiet, exit status 0.

Issue 17: every normal stop printed ``ERROR: Cancel 3 running task(s)`` and took about
five seconds, because uvicorn waited for the sites' held long-polls and then cancelled
them. Now the hub answers them as its stop begins. The site below holds a desired-state
poll of up to two minutes, so a ``304`` it gets while the hub stops can only be the answer
the stop gave it (no poll of the test's length runs out on its own).
"""

from __future__ import annotations

import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import (
    GatewayProcess,
    HubProcess,
    SiteProcess,
    issue_gateway_certificate,
)
from tests.conftest import trust_fleet_ca
from tests.waiting import wait_for

#: Polls held far longer than the test runs: only the shutdown can answer one.
LONG_POLL = {"MODELFLEET_SITE_LONG_POLL_S": "120"}
HUB_LONG_POLL = {"MODELFLEET_HUB_LONG_POLL_MAX_S": "120"}
DESIRED = "GET /api/v1/sites/plant/desired-state"


def ssl_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


class Fleet:
    def __init__(self, root: Path, mp: pytest.MonkeyPatch) -> None:
        init = init_hub(root / "hub")
        self.hub_log = root / "hub.log"
        self.hub = HubProcess(root / "hub", log_path=self.hub_log, extra_env=HUB_LONG_POLL)
        self.hub.start()
        trust_fleet_ca(mp, self.hub.ca_file)
        self.admin = HubClient(self.hub.url, init.admin_token)
        created = self.admin.add_site("plant", {"region": "eu-west"})
        self.site_log = root / "site.log"
        self.site = SiteProcess(
            root / "site",
            self.hub.url,
            created["enrollment_token"],
            log_path=self.site_log,
            log_level="debug",  # each hub call is a DEBUG line: the test reads the answers
            extra_env=LONG_POLL,
        ).start(timeout=60)

    def site_lines(self, text: str) -> list[str]:
        return [line for line in self.site_log.read_text().splitlines() if text in line]

    def close(self) -> None:
        self.site.stop()
        self.admin.close()
        self.hub.stop()


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    made = Fleet(tmp_path, monkeypatch)
    try:
        yield made
    finally:
        made.close()


def test_sigterm_answers_the_held_long_poll_and_exits_0_without_an_error(fleet: Fleet) -> None:
    # The first poll is answered at once (the site has no ETag yet), the next one is held.
    wait_for(lambda: bool(fleet.site_lines(f"{DESIRED} -> 200")), "the first desired state")
    # The site's report follows its first desired state: by then its next poll waits.
    wait_for(lambda: bool(fleet.site_lines("/report -> 204")), "the site's first report")
    assert not fleet.site_lines(f"{DESIRED} -> 304")  # nothing answered the held poll yet
    proc = fleet.hub.proc
    assert proc is not None

    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    status = proc.wait(30)
    stopped_in = time.monotonic() - started

    assert status == 0, fleet.hub_log.read_text()
    hub_output = fleet.hub_log.read_text()
    assert "ERROR" not in hub_output, hub_output
    assert "Traceback" not in hub_output, hub_output
    assert "Cancel" not in hub_output, hub_output
    # The held poll got its answer ("unchanged"); the site then finds the hub gone, once.
    wait_for(lambda: bool(fleet.site_lines(f"{DESIRED} -> 304")), "the held poll's answer")
    wait_for(lambda: bool(fleet.site_lines("hub unreachable")), "the site noticing")
    assert len(fleet.site_lines("WARNING modelfleet.site hub unreachable")) == 1
    print(f"hub stopped {stopped_in:.2f}s after SIGTERM")  # a figure, never asserted


def test_sigterm_to_a_site_and_a_gateway_with_idle_clients_exits_0_quietly(
    fleet: Fleet, tmp_path: Path
) -> None:
    tls_dir = issue_gateway_certificate(fleet.hub.data_dir, tmp_path / "gateway-tls")
    gateway_log = tmp_path / "gateway.log"
    gateway = GatewayProcess(
        ["--hub", fleet.hub.url, "--token", fleet.admin.token or "", "--log-level", "info"],
        tls_dir=tls_dir,
        log_path=gateway_log,
    ).start(timeout=60)
    try:
        for child, log in ((gateway, gateway_log), (fleet.site, fleet.site_log)):
            proc = child.proc
            assert proc is not None
            # A client keeping its connection open in its pool, as a gateway or SDK does:
            # the server must not wait for it to go away.
            with httpx.Client(verify=ssl_context(child.ca_file), timeout=10) as idle:
                assert idle.get(f"{child.url}/v2/health/live").status_code == 200
                proc.send_signal(signal.SIGTERM)
                started = time.monotonic()
                assert proc.wait(30) == 0, log.read_text()
                took = time.monotonic() - started
                print(f"{type(child).__name__} stopped {took:.2f}s after SIGTERM")
            output = log.read_text()
            assert "Traceback" not in output, output
            assert " ERROR " not in output, output
    finally:
        gateway.stop()
