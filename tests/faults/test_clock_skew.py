"""Sites whose clocks are five minutes ahead of and behind the hub's (issue #20, item 4).

The site processes run under Debian's libfaketime (a real skewed ``clock_gettime`` for the
whole process: Python, OpenSSL's certificate checks, SQLite), the hub on the machine's
clock. The hub must judge by its own clock: it rebases a batch's windows by the site's
``sent_at`` (hub/telemetry.py, ``rebase``), certificates are backdated by ten minutes
(pki/ca.py, ``BACKDATE``), liveness is the hub's receive time, and an infer token's expiry
is judged at the site on the hub's clock (grants.py, ``clock_offset``).
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess, wait_http
from tests.conftest import trust_fleet_ca
from tests.deploy.fleet import (
    HUB_ENV,
    SITE_ENV,
    Fleet,
    env,
    wait_for,
)

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
SKEWS = {"ahead": "+5m", "behind": "-5m"}
SKEW_S = {"ahead": 300.0, "behind": -300.0}


def faked(offset: str) -> dict[str, str]:
    """The environment that runs a process with its clock ``offset`` off the machine's."""
    return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": offset, "FAKETIME_NO_CACHE": "1"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    assert LIBFAKETIME.exists(), "apt-get install -y faketime (.ci/run installs it)"
    root = tmp_path_factory.mktemp("skew")
    init = init_hub(root / "hub")
    with env(HUB_ENV):
        hub = HubProcess(root / "hub").start()
    trusted = pytest.MonkeyPatch()
    trust_fleet_ca(trusted, hub.ca_file)
    admin = HubClient(hub.url, init.admin_token)
    made = Fleet(root, hub, admin, init.admin_token)
    # Expires before the site ahead believes it is now: it works there only if expiry is
    # judged on the hub's clock (the fleet is done with it well within the TTL).
    made.infer = admin.create_token("traffic", "infer", ttl=240).token
    try:
        for name, offset in SKEWS.items():
            token = admin.add_site(name, {"region": name})["enrollment_token"]
            extra = {**SITE_ENV, **faked(offset)}
            made.sites[name] = SiteProcess(root / name, hub.url, token, extra_env=extra)
            made.sites[name].start(wait_ready=False)
        for site in made.sites.values():
            wait_http(f"{site.url}/v2/health/ready", 60, site.proc)
        yield made
    finally:
        for site in made.sites.values():
            site.stop()
        admin.close()
        hub.stop()
        trusted.undo()


def test_the_sites_clocks_really_are_off(fleet: Fleet) -> None:
    """The premise: each site process reads a clock five minutes off (its HTTP Date), and
    it still enrolled (its certificate, issued a moment ago by the hub, was valid to it)."""
    code = "import time; print(time.time())"
    for name, offset in SKEWS.items():
        out = subprocess.run(
            [sys.executable, "-c", code], env=faked(offset), capture_output=True, check=True
        )
        assert abs(float(out.stdout) - time.time() - SKEW_S[name]) < 60, (name, out.stdout)
        ca = ssl.create_default_context(cafile=str(fleet.sites[name].ca_file))
        with httpx.Client(verify=ca, timeout=10) as http:
            date = http.get(f"{fleet.sites[name].url}/v2/health/live").headers.get("date")
        if date is not None:  # what the site's own server says the time is
            said = parsedate_to_datetime(date)
            assert abs((said - datetime.now(UTC)).total_seconds() - SKEW_S[name]) < 60, date


def test_skewed_sites_are_online_by_the_hubs_clock(fleet: Fleet) -> None:
    wait_for(lambda: all(s["online"] for s in fleet.admin.list_sites()), 60, "both sites online")
    for site in fleet.admin.list_sites():
        seen = site["last_seen"]
        seen = seen if isinstance(seen, datetime) else datetime.fromisoformat(str(seen))
        # The hub's receive time: never five minutes off, whichever way the site's clock is.
        assert abs(datetime.now(UTC) - seen) < timedelta(seconds=120), site
