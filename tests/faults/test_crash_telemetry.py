"""SIGKILL in the telemetry windows: the hub's totals stay exact, nothing lost or doubled.

Real processes: one hub for the module (SQLite; the PostgreSQL ingest test has its own)
and per test one site serving a tiny model. Each test first fills the site's outbox with a
known number of requests while its shipper is idle (interval one hour: it made its startup
pass with the outbox empty), then wakes the shipper the way production does, with the end
of a hub outage (the poller's first answer after one wakes it), so the first batch taken
hits the armed crash point. The site tests make that outage with a WAN link between site
and hub (cut, then restored); the ingest test by restarting the hub armed. Counts are read
from the outbox file, the hub's API and its store, never assumed from elapsed time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub.datadir import DataDir
from modelfleet.hub.store import open_store
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess
from modelfleet.sim.wan import WanLink
from tests.conftest import trust_fleet_ca, write_tiny_onnx
from tests.faults.crash import armed, wait_killed
from tests.waiting import wait_for

MODEL = "pump"
#: Windows close every 0.2 s; a failed send is retried within 1 s.
FAST = {
    "MODELFLEET_SITE_TELEMETRY_WINDOW_S": "0.2",
    "MODELFLEET_SITE_TELEMETRY_SHIP_INTERVAL_S": "0.2",
    "MODELFLEET_SITE_RETRY_MAX_S": "1",
}
#: The shipper makes its startup pass, then waits an hour: windows pile up in the outbox
#: until the end of an outage wakes it. That wake comes with the first poll answered after
#: the outage; a 1 s long-poll makes it come within a second, not the default 30 s.
HOLD = {
    **FAST,
    "MODELFLEET_SITE_TELEMETRY_SHIP_INTERVAL_S": "3600",
    "MODELFLEET_SITE_LONG_POLL_S": "1",
}
#: Requests per burst; each burst lands in its own window(s), so a batch has several.
BURSTS = (5, 7, 9)


@dataclass
class Hub:
    root: Path
    proc: HubProcess
    admin: HubClient
    infer: str
    db: str | None = None

    def stored_requests(self, site: str) -> int:
        """What the store holds for ``site`` x MODEL, read directly (the hub may be dead)."""
        store = open_store(self.db or DataDir(self.root).default_db_url())
        try:
            return sum(t.requests for t in store.telemetry.totals(site) if t.model == MODEL)
        finally:
            store.close()


def _start_hub(root: Path, db: str | None = None) -> Hub:
    init = init_hub(root, db=db)
    proc = HubProcess(root, db=db).start()
    admin = HubClient(proc.url, init.admin_token, ca_file=proc.ca_file)
    admin.push(write_tiny_onnx(root.parent / f"{root.name}-tiny.onnx"), MODEL)
    return Hub(root, proc, admin, admin.create_token("crash-telemetry", "infer").token, db)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    made = _start_hub(tmp_path_factory.mktemp("crash-telemetry") / "hub")
    with pytest.MonkeyPatch.context() as mp:
        trust_fleet_ca(mp, made.proc.ca_file)  # the sites and the test's httpx calls
        try:
            yield made
        finally:
            made.admin.close()
            made.proc.stop()


def _hub_requests(hub: Hub, site: str) -> int:
    """What the hub counts for ``site`` x MODEL (every version), from its status API."""
    for row in hub.admin.get_telemetry_status()["sites"]:
        if row["site"] == site:
            return sum(int(m["requests_total"]) for m in row["models"] if m["model"] == MODEL)
    return 0


def _outbox(site: SiteProcess) -> tuple[int, int, int]:
    """(windows, requests in them, windows in flight) in the site's outbox file."""
    path = site.state_dir / "telemetry.db"
    if not path.exists():
        return 0, 0, 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(requests), 0), COUNT(batch_id) FROM windows"
        ).fetchone()
    except sqlite3.OperationalError:  # the table is not created yet
        return 0, 0, 0
    finally:
        db.close()
    return int(row[0]), int(row[1]), int(row[2])


def _serving(site: SiteProcess, token: str) -> bool:
    try:
        response = httpx.get(
            f"{site.url}/v2/models/{MODEL}/ready",
            timeout=2,
            headers={"Authorization": f"Bearer {token}"},
        )
    except httpx.TransportError:
        return False
    return response.status_code == 200


def _unreachable_lines(site: SiteProcess) -> int:
    """How many outages the site has logged (one WARNING at the start of each)."""
    log = site.state_dir.parent / f"{site.state_dir.name}.log"
    return log.read_text(errors="replace").count("hub unreachable:") if log.exists() else 0


def _fill(hub: Hub, name: str, hub_url: str, env: dict[str, str]) -> tuple[SiteProcess, int]:
    """A site (its shipper idle) whose outbox holds every window of a known number of
    requests, none sent. Returns the running site and that number."""
    created = hub.admin.add_site(name, {"region": "eu-west"})
    site = SiteProcess(
        hub.root.parent / f"site-{name}", hub_url, created["enrollment_token"],
        extra_env={**HOLD, **env},
    ).start()  # fmt: skip
    hub.admin.assign(name, f"{MODEL}:1")
    wait_for(lambda: _serving(site, hub.infer), f"{name} to serve {MODEL}")
    x = np.ones((2, 4), dtype=np.float32).ravel().tolist()
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 4], "data": x}]}
    sent = 0
    with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {hub.infer}"}) as http:
        for burst in BURSTS:
            for _ in range(burst):
                answer = http.post(f"{site.url}/v2/models/{MODEL}/infer", json=body)
                assert answer.status_code == 200, answer.text
            sent += burst
            # The burst's windows are closed and on disk before the next burst starts.
            wait_for(lambda n=sent: _outbox(site)[1] == n, f"{sent} requests in {name}'s outbox")
    windows, _, in_flight = _outbox(site)
    assert windows >= len(BURSTS), _outbox(site)
    assert in_flight == 0, _outbox(site)
    assert _hub_requests(hub, name) == 0  # the idle shipper sent nothing
    return site, sent


def _drained(site: SiteProcess) -> bool:
    return _outbox(site)[0] == 0


def _outage(link: WanLink, site: SiteProcess) -> None:
    """Cut the link until the site has noticed, then restore it: the poller's next answer
    wakes the shipper."""
    before = _unreachable_lines(site)
    link.cut("reset")
    wait_for(lambda: _unreachable_lines(site) > before, "the site to notice the outage")
    link.restore()


@pytest.fixture
def link(hub: Hub) -> Iterator[WanLink]:
    with WanLink(("127.0.0.1", hub.proc.port), scheme="https") as made:
        yield made


def test_sigkill_after_mark_sends_the_batch_once(hub: Hub, link: WanLink) -> None:
    """Killed with a batch marked in the outbox but not sent: the hub has none of it; after
    restart the same batch goes, and the hub's total equals the requests made, exactly."""
    marker = hub.root.parent / "after_mark.crash"
    site, sent = _fill(hub, "plant-mark", link.url, armed("site.spool.after_mark", marker))
    try:
        _outage(link, site)
        wait_killed(site.proc, "site.spool.after_mark", marker)
        windows, requests, in_flight = _outbox(site)
        assert (requests, in_flight) == (sent, windows)  # marked, all of it, and kept
        assert _hub_requests(hub, "plant-mark") == 0  # died before the send

        site.extra_env = dict(FAST)
        site.start()
        wait_for(lambda: _drained(site), "plant-mark's outbox to empty")
        assert _hub_requests(hub, "plant-mark") == sent
    finally:
        site.kill()  # its outbox is checked; a polite stop would only cost time


def test_sigkill_after_send_counts_the_resent_batch_once(hub: Hub, link: WanLink) -> None:
    """Killed after the hub stored the batch, before the site deleted it: the hub already
    counts every request; the restarted site resends the batch under the same id and the
    hub's batch dedup keeps the total equal to the requests made (not twice that)."""
    marker = hub.root.parent / "after_send.crash"
    site, sent = _fill(hub, "plant-send", link.url, armed("site.spool.after_send", marker))
    try:
        _outage(link, site)
        wait_killed(site.proc, "site.spool.after_send", marker)
        assert _hub_requests(hub, "plant-send") == sent  # stored: one batch held them all
        windows, _, in_flight = _outbox(site)
        assert windows > 0  # ... and still in the outbox, in flight
        assert in_flight == windows

        site.extra_env = dict(FAST)
        site.start()
        wait_for(lambda: _drained(site), "plant-send's outbox to empty")
        assert _hub_requests(hub, "plant-send") == sent
    finally:
        site.kill()  # its outbox is checked; a polite stop would only cost time


def _ingest_crash(hub: Hub, name: str) -> None:
    """The hub dies inside the ingest transaction (batch row and windows written, not
    committed): its store then holds nothing of that batch, and the site's resend is
    counted once, whole (a committed batch id without its windows would make the resend a
    repeat and the total 0)."""
    marker = hub.root.parent / f"{name}.crash"
    site, sent = _fill(hub, name, hub.proc.url, {})
    try:
        before = _unreachable_lines(site)
        hub.proc.kill()  # outside any window: the store holds nothing of the batch yet
        wait_for(lambda: _unreachable_lines(site) > before, f"{name} to notice the outage")
        hub.proc.extra_env = armed("hub.ingest.mid_transaction", marker)
        hub.proc.start()  # the site's next poll is answered: its shipper sends the batch
        wait_killed(hub.proc.proc, "hub.ingest.mid_transaction", marker)
        assert hub.stored_requests(name) == 0  # rolled back whole
        assert _outbox(site)[1] == sent

        hub.proc.extra_env = {}
        hub.proc.start()
        wait_for(lambda: _drained(site), f"{name}'s outbox to empty")
        assert _hub_requests(hub, name) == sent
    finally:
        site.kill()  # its outbox is checked; a polite stop would only cost time
        if hub.proc.extra_env or hub.proc.proc is None or hub.proc.proc.poll() is not None:
            hub.proc.stop()  # a failure above: leave the module's hub up and unarmed
            hub.proc.extra_env = {}
            hub.proc.start()


def test_sigkill_mid_ingest_transaction_rolls_back_whole(hub: Hub) -> None:
    _ingest_crash(hub, "plant-ingest")


@pytest.mark.postgres
def test_sigkill_mid_ingest_transaction_rolls_back_whole_on_postgresql(
    postgres_url: str, tmp_path: Path
) -> None:
    pg = _start_hub(tmp_path / "hub", db=postgres_url)
    with pytest.MonkeyPatch.context() as mp:
        trust_fleet_ca(mp, pg.proc.ca_file)
        try:
            _ingest_crash(pg, "plant-pg")
        finally:
            pg.admin.close()
            pg.proc.stop()
