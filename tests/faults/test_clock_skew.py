"""Sites whose clocks are five minutes ahead of and behind the hub's (issue #20, item 4).

The site processes run under Debian's libfaketime (a real skewed ``clock_gettime`` for the
whole process: Python, OpenSSL's certificate checks, SQLite), the hub on the machine's
clock. The hub must judge by its own clock: it rebases a batch's windows by the site's
``sent_at`` (hub/telemetry.py, ``rebase``), certificates are backdated by ten minutes
(pki/ca.py, ``BACKDATE``), liveness is the hub's receive time, and an infer token's expiry
is judged at the site on the hub's clock (grants.py, ``clock_offset``). A rollout's gates
judge each skewed site's telemetry on that clock, and the hub's totals are the requests the
sites answered, exactly. Only the sites' wall clocks are faked, not their monotonic clocks
(see :func:`faked`: with both faked, libfaketime hangs every timed wait of the site).
The rules themselves, without processes: ``test_clock_skew_rules.py``.
"""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

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
    baseline,
    deploy,
    env,
    reported,
    settle,
    wait_for,
)
from tests.deploy.test_rollout_e2e import write_failing_onnx

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
SKEWS = {"ahead": "+5m", "behind": "-5m"}
SKEW_S = {"ahead": 300.0, "behind": -300.0}


def faked(offset: str) -> dict[str, str]:
    """The environment that runs a process with its wall clock ``offset`` off the machine's.

    Only the wall clock: ``FAKETIME_DONT_FAKE_MONOTONIC``. Left faked, libfaketime 0.9.10
    answers ``CLOCK_MONOTONIC`` with the faked epoch time (~1.8e9 s instead of the uptime)
    yet does not intercept ``sem_clockwait``, which CPython 3.11 (glibc >= 2.30) uses for
    every lock or ``Event.wait`` with a timeout: the absolute monotonic deadline it computes
    reaches the kernel unconverted, ~57 years ahead, so every timed wait of the site hangs
    (the telemetry closer and shipper loops, hence the windows that never reached the hub;
    enrolment and the long-poll only do socket I/O, with relative timeouts, and worked).
    A machine whose clock is off has a correct monotonic clock anyway (it is local, counted
    from boot, never compared with another machine's), so this is the faithful setting.
    Its one cost: libfaketime still converts an absolute ``clock_nanosleep`` deadline as
    if monotonic were faked, so ``time.sleep`` fails with EINVAL in such a process; the
    site never calls it (its loops wait on events, modelfleet.loops)."""
    return {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME": offset,
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


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
    # A timed wait returns (see faked()): the site's background loops depend on it.
    code = "import threading, time; threading.Event().wait(0.01); print(time.time())"
    for name, offset in SKEWS.items():
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=faked(offset),
            capture_output=True,
            check=True,
            timeout=30,
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


@contextmanager
def load(fleet: Fleet, model: str) -> Iterator[dict[str, Counter[int]]]:
    """Requests with non-zero inputs to every site (~30/s each) until the block ends; per
    site, its answers by HTTP status (0: no answer)."""
    stop = threading.Event()
    answers: dict[str, Counter[int]] = {name: Counter() for name in fleet.sites}
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}

    def run(name: str, url: str) -> None:
        auth = {"Authorization": f"Bearer {fleet.infer}"}
        with httpx.Client(timeout=10, headers=auth) as http:
            while not stop.is_set():
                try:
                    status = http.post(f"{url}/v2/models/{model}/infer", json=body).status_code
                except httpx.TransportError:
                    status = 0
                answers[name][status] += 1
                stop.wait(0.03)

    threads = [threading.Thread(target=run, args=(n, s.url)) for n, s in fleet.sites.items()]
    for thread in threads:
        thread.start()
    try:
        yield answers
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def hub_rows(fleet: Fleet, model: str) -> dict[str, list[dict[str, Any]]]:
    """The hub's telemetry rows of ``model`` per site (one per version)."""
    status = fleet.admin.get_telemetry_status()
    return {
        row["site"]: [m for m in row["models"] if m["model"] == model] for row in status["sites"]
    }


def at(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def test_a_gate_judges_skewed_sites_telemetry_on_the_hubs_clock(fleet: Fleet) -> None:
    """Each skewed site is a wave of its own: a good version passes its gates at both (the
    windows of the site five minutes behind would all predate the wave, and never count,
    were they not rebased), a version that errors fails at the first (the site behind).
    The hub counted exactly the requests each site answered, on windows that end on the
    hub's clock, and it measured each site's skew from ``sent_at``."""
    name = "skewed"
    gates = {"max_error_rate": 0.05, "max_p99_ms": 1000, "min_requests": 10}
    waves = {"kind": "waves", "label": "region", "bake_s": 1, "progress_deadline_s": 30}
    ended = ("succeeded", "failed", "paused")
    baseline(fleet, name)
    with load(fleet, name) as answers:
        fleet.admin.push(fleet.model(offset=3.0), name, training_regions=["global"])
        good_order = {**waves, "order": ["ahead", "behind"]}
        good_id = deploy(fleet, f"{name}:2", strategy=good_order, gates=gates)["rollout"]["id"]
        good = settle(fleet, good_id, ended)
        print("good:", [h["message"] for h in good["history"]])
        assert good["state"] == "succeeded", good["reason"]
        fleet.admin.push(fleet.model(write_failing_onnx), name, training_regions=["global"])
        bad_order = {**waves, "order": ["behind", "ahead"]}
        bad_id = deploy(fleet, f"{name}:3", strategy=bad_order, gates=gates)["rollout"]["id"]
        bad = settle(fleet, bad_id, ended)
        wait_for(lambda: reported(fleet, "behind", name).get("active_version") == 2, 60, "undo")
    print("bad:", bad["reason"], "answers:", answers)
    assert [h["outcome"] for h in good["history"]] == ["success", "success"]
    assert all(h["figures"]["requests"] >= 10 for h in good["history"]), good["history"]
    assert bad["state"] == "failed", bad["reason"]
    verdict = bad["history"][-1]
    assert (verdict["step"], verdict["gate"]) == (0, "max_error_rate"), verdict
    assert verdict["figures"]["errors"] >= 10
    for site, counts in answers.items():
        assert counts[0] == 0, (site, counts)  # every request answered: each one counted
    served = {site: sum(counts.values()) for site, counts in answers.items()}
    wait_for(
        lambda: (
            {s: sum(m["requests_total"] for m in r) for s, r in hub_rows(fleet, name).items()}
            == served
        ),
        60,
        f"the hub's totals to reach {served}",
    )
    now = datetime.now(UTC)
    last: dict[str, dict[int, datetime]] = {}
    for site, models in hub_rows(fleet, name).items():
        errors = sum(m["errors_total"] for m in models)
        assert errors == sum(n for status, n in answers[site].items() if status != 200), site
        last[site] = {m["version"]: at(m["last_window_end"]) for m in models}
        assert all(abs((now - end).total_seconds()) < 60 for end in last[site].values()), last
    # On the hub's time line: a new version's last window ends after the hub created its
    # rollout, and not after now. Unrebased, the site behind's would end five minutes
    # before the rollouts began (the site ahead's would be pulled back to their arrival
    # by the hub's future-window rule even so: its skew is checked in the log below).
    for site in SKEWS:
        assert at(good["created_at"]) < last[site][2] <= now, (site, last)
    assert at(bad["created_at"]) < last["behind"][3] <= now, last
    log = (fleet.hub.data_dir / "hub.log").read_text()
    for site, skew in SKEW_S.items():
        said = re.findall(rf"site {site}: clock (-?\d+)s off the hub's; windows rebased", log)
        assert len(said) == 1, (site, said)  # once for the episode, not once per batch
        assert abs(float(said[0]) - skew) < 30, (site, said)
