"""The control plane's own faults: PostgreSQL restarted under two running hub replicas, the
leader's lease sessions terminated, the lease holder SIGKILLed mid-rollout and mid-FL-job, a
black-hole partition between the leader and PostgreSQL.

One private PostgreSQL cluster (``pgcluster.py``; the shared server must never restart),
two hub processes on it sharing one data directory, and two site processes (site-a trains
federated jobs behind a gate the test holds) serve the whole module. The sites talk to
hub-1; hub-0 starts first and so holds every lease, which is what the tests take away.
Each hub names its sessions (``application_name``) so the test can tell which replica
holds which advisory lock. hub-0 reaches PostgreSQL through a WAN link (no delay: a plain
relay until the partition test cuts it); hub-1 connects directly.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelfleet.federation.simulation import digits_sites
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub.store.sql.leadership import _lock_key
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess, wait_http
from modelfleet.sim.wan import WanLink
from tests.conftest import write_tiny_onnx
from tests.faults.pgcluster import PrivatePostgres, postgres_bin_dir
from tests.federation.conftest import write_site_config
from tests.federation.gated_trainer import GATE_ENV, allow, waiting_at
from tests.waiting import wait_for

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]
#: Short database bounds, so a partition resolves in seconds: a statement waits at most 3 s,
#: the server ends a leader's lease session silent for 6 s, a leader's ping waits 1 s.
HUB_ENV = {
    "MODELFLEET_HUB_ROLLOUT_INTERVAL_S": "0.3",
    "MODELFLEET_HUB_SCHEDULE_INTERVAL_S": "1",
    "MODELFLEET_HUB_DB_STATEMENT_DEADLINE_S": "3",
    "MODELFLEET_HUB_DB_LEASE_TIMEOUT_S": "6",
    "MODELFLEET_HUB_DB_LEASE_PING_DEADLINE_S": "1",
}
ROLES = ("rollout controller", "federated coordinator")
#: Waves that stop after each bake for want of traffic: only `promote` moves them on, so
#: the test knows which wave the rollout is in whatever the machine's speed.
WAVES = {
    "strategy": {
        "kind": "waves", "label": "region", "order": ["eu-west", "us-east"],
        "bake_s": 0.2, "progress_deadline_s": 0.5,
    },
    "gates": {"min_requests": 1_000_000},
}  # fmt: skip


@dataclass
class PgFleet:
    pg: PrivatePostgres
    root: Path
    hubs: list[HubProcess]
    admins: list[HubClient]
    sites: dict[str, SiteProcess]
    gate: Path
    link: WanLink  # hub-0 -> PostgreSQL
    fits: list[int] = field(default_factory=lambda: [1])  # site-a's fit allowance

    def lease_holders(self) -> dict[str, str]:
        """Role -> the application_name (hub-0, hub-1) of the session holding its lock."""
        rows = self.pg.sql(
            "SELECT l.classid::bigint, l.objid::bigint, a.application_name FROM pg_locks l"
            " JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory' AND l.granted"
        )
        held = {((int(c) << 32) | int(o)): str(n) for c, o, n in rows}  # type: ignore[call-overload]
        out = {}
        for role in ROLES:
            key = _lock_key(role, "postgres", "public") & 0xFFFF_FFFF_FFFF_FFFF
            if key in held:
                out[role] = held[key]
        return out

    def open_gate(self, calls: int) -> None:
        self.fits[0] = calls
        allow(self.gate, calls)


def _hub(root: Path, url: str, i: int) -> HubProcess:
    db = f"{url}?application_name=hub-{i}&connect_timeout=2"
    return HubProcess(root, db=db, log_path=root.parent / f"hub{i}.log", extra_env=HUB_ENV)


@pytest.fixture(scope="module")
def pgfleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgFleet]:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server installed (/usr/lib/postgresql/*/bin)")
    pg = PrivatePostgres(bin_dir)
    tmp = tmp_path_factory.mktemp("pgfleet")
    hubs: list[HubProcess] = []
    sites: dict[str, SiteProcess] = {}
    mp = pytest.MonkeyPatch()
    link = WanLink(("127.0.0.1", pg.port))
    try:
        pg.start()
        link.start()
        init = init_hub(tmp / "hub", db=pg.url)
        mp.setenv("MODELFLEET_CA_FILE", str(init.ca_file))
        mp.setenv("SSL_CERT_FILE", str(init.ca_file))
        via_link = f"postgresql://postgres@{link.address}/postgres"
        hubs.append(_hub(tmp / "hub", via_link, 0).start(timeout=60))
        admin0 = HubClient(hubs[0].url, init.admin_token)
        fleet = PgFleet(pg, tmp, hubs, [admin0], sites, tmp / "site-a.gate", link)
        wait_for(lambda: set(fleet.lease_holders().values()) == {"hub-0"}, "hub-0 leads", 30)
        hubs.append(_hub(tmp / "hub", pg.url, 1).start(timeout=60))
        fleet.admins.append(HubClient(hubs[1].url, init.admin_token))
        allow(fleet.gate, 1)
        _, virtual, _ = digits_sites(2, non_iid=False)
        config = write_site_config(
            tmp, "site-a", virtual[0].x, virtual[0].y,
            trainers={"gated": "tests.federation.gated_trainer:GatedTrainer"},
        )  # fmt: skip
        for name, region in (("site-a", "eu-west"), ("site-b", "us-east")):
            created = admin0.add_site(name, {"region": region})
            env = {
                "MODELFLEET_SITE_RETRY_MAX_S": "1",
                "MODELFLEET_SITE_FL_POLL_S": "5",
                "MODELFLEET_SITE_REPORT_INTERVAL_S": "1",
                "PYTHONPATH": str(REPO),
            }
            if name == "site-a":
                env |= {"MODELFLEET_SITE_CONFIG_FILE": str(config), GATE_ENV: str(fleet.gate)}
            sites[name] = SiteProcess(
                tmp / name, hubs[1].url, created["enrollment_token"], extra_env=env
            ).start(wait_ready=False)
        for site in sites.values():
            wait_http(f"{site.url}/v2/health/ready", 60, site.proc)
        yield fleet
        for admin in fleet.admins:
            admin.close()
    finally:
        for proc in [*sites.values(), *hubs]:
            proc.stop()
        link.stop()
        mp.undo()
        pg.destroy()


def _get(client: HubClient, path: str) -> Any:
    return client.request("GET", path).json()


def _active(fleet: PgFleet, site: str, model: str) -> int | None:
    view = _get(fleet.admins[1], f"/api/v1/sites/{site}")
    return next((m.get("active_version") for m in view["models"] if m["name"] == model), None)


def _paused_at(fleet: PgFleet, rid: str, step: int) -> None:
    def there() -> bool:
        r = _get(fleet.admins[1], f"/api/v1/rollouts/{rid}")
        return bool(r["state"] == "paused" and r["step"] == step)

    wait_for(there, f"rollout {rid} paused in wave {step}", 60)


def _promote_to_the_end(fleet: PgFleet, client: HubClient, rid: str) -> dict[str, Any]:
    """Promote a rollout paused for want of traffic, wave by wave, until it succeeds."""
    for step in (1, 2):
        _paused_at(fleet, rid, step)
        client.request("POST", f"/api/v1/rollouts/{rid}/promote")
    wait_for(lambda: _get(client, f"/api/v1/rollouts/{rid}")["state"] == "succeeded", "success", 60)
    return dict(_get(client, f"/api/v1/rollouts/{rid}"))


def _start_waves(fleet: PgFleet, name: str, offset: float) -> str:
    admin = fleet.admins[1]
    for v, off in ((1, offset), (2, offset + 0.5)):
        admin.push(write_tiny_onnx(fleet.root / f"{name}-{v}.onnx", off), name)
    first = admin.deploy({"ref": f"{name}:1", "selector": "", "strategy": {"bake_s": 0}})
    wait_for(
        lambda: _get(admin, f"/api/v1/rollouts/{first['rollout']['id']}")["state"] == "succeeded",
        "version 1 everywhere",
        60,
    )
    result = admin.deploy({"ref": f"{name}:2", "selector": "", **WAVES})
    rid = str(result["rollout"]["id"])
    _paused_at(fleet, rid, 1)  # wave 1 (eu-west) applied, waiting for a promote
    return rid


def _no_duplicates(fleet: PgFleet, rid: str, final: dict[str, Any]) -> None:
    # Each wave is judged once and promoted once, in order: a wave run twice repeats a pair.
    seen = [(h["step"], h["outcome"]) for h in final["history"]]
    assert seen == [(0, "inconclusive"), (0, "promote"), (1, "inconclusive"), (1, "promote")], (
        f"a wave ran twice or was skipped: {final['history']}"
    )
    events = fleet.admins[1].list_events(limit=1000)
    mine = Counter((e.type, e.payload.get("wave")) for e in events if e.subject == rid)
    twice = {k: n for k, n in mine.items() if n > 1 and k[0] != "rollout.paused"}
    assert not twice, f"events told twice: {twice}"
    assert sum(n for (kind, _), n in mine.items() if kind == "rollout.succeeded") == 1, mine


def _start_fl(fleet: PgFleet, job_id: str) -> None:
    """A 3-round job on site-a whose round 2 stays open until the test opens the gate."""
    import onnx

    from modelfleet.federation.specs import ModelSpec, build_onnx, init_weights

    spec = ModelSpec(family="softmax", features=64, classes=10)
    path = fleet.root / f"{job_id}.onnx"
    onnx.save(build_onnx(spec, init_weights(spec)), str(path))
    admin = fleet.admins[1]
    admin.push(path, job_id)
    wait_for(lambda: "site-a" in str(admin.get_federation_consents()), "site-a's consent", 60)
    calls = fleet.fits[0]
    fleet.open_gate(calls + 1)  # round 1 answered, round 2 held
    admin.start_federated_job(
        {
            "id": job_id, "model": job_id, "sites": "region=eu-west", "data": "digits",
            "rounds": 3, "min_sites": 1, "local_epochs": 1, "lr": 0.5, "trainer": "gated",
            "round_timeout_s": 600, "alias": "candidate",
        }
    )  # fmt: skip
    wait_for(lambda: waiting_at(fleet.gate) == calls + 2, "site-a holding round 2", 60)


def _fl_finished_once(fleet: PgFleet, job_id: str) -> None:
    admin = fleet.admins[1]
    finished_states = ("completed", "failed", "aborted")
    wait_for(lambda: _get(admin, f"/api/v1/federation/jobs/{job_id}")["state"] in finished_states,
             f"{job_id} to finish", 90)  # fmt: skip
    job = _get(admin, f"/api/v1/federation/jobs/{job_id}")
    assert job["state"] == "completed", job
    rounds = [r["round"] for r in job["round_details"]]
    assert rounds == [1, 2, 3], f"a round ran twice or was skipped: {rounds}"
    versions = _get(admin, f"/api/v1/models/{job_id}")["versions"]
    assert len(versions) == 2, f"exactly one registered result expected: {versions}"
    finished = [e for e in admin.list_events(limit=1000) if e.type == "fl.job_finished"]
    assert [e.subject for e in finished].count(job_id) == 1


def _stepped_down(log: Path, offset: int, role: str) -> bool:
    """hub-0's log, from ``offset``, tells that its ``role`` loop gave the lease up."""
    text = log.read_bytes()[offset:].decode(errors="replace")
    return f"lost the {role} lock" in text or f"the {role} lease went unconfirmed" in text


def test_a_blackhole_between_the_leader_and_postgres(pgfleet: PgFleet) -> None:
    """hub-0 leads; its path to PostgreSQL starts dropping every packet. Its leader loops
    step down (a ping unanswered in 1 s), the server ends its silent lease sessions (6 s) and
    hub-1 takes over and finishes the rollout; hub-0's API answers 503 instead of hanging;
    after the heal hub-0 serves again and nothing was done twice."""
    fleet = pgfleet
    if set(fleet.lease_holders().values()) != {"hub-0"}:  # an earlier test moved a lease
        fleet.hubs[1].stop()
        wait_for(lambda: set(fleet.lease_holders().values()) == {"hub-0"}, "hub-0 leads", 30)
        fleet.hubs[1].start(timeout=60)
    rid = _start_waves(fleet, "hole", 40.0)
    log = fleet.root / "hub0.log"
    offset = log.stat().st_size
    auth = {"Authorization": f"Bearer {fleet.admins[0].token}"}
    hub0 = fleet.hubs[0].url
    answers: dict[str, httpx.Response] = {}

    def call_hub0() -> None:  # while the loops step down: a call never waits for the heal
        with httpx.Client(base_url=hub0, timeout=60) as http:  # past 60 s: it hung
            answers["api"] = http.get(f"/api/v1/rollouts/{rid}", headers=auth)
            figures["503"] = time.monotonic() - cut_at
            answers["readyz"] = http.get("/readyz")

    figures: dict[str, float] = {}
    caller = threading.Thread(target=call_hub0)
    fleet.link.cut("blackhole")
    cut_at = time.monotonic()
    caller.start()
    try:
        for role in ROLES:
            wait_for(lambda r=role: _stepped_down(log, offset, r), f"hub-0 gives up the {role}",
                     30)  # fmt: skip
        figures["step-down"] = time.monotonic() - cut_at
        wait_for(lambda: set(fleet.lease_holders().values()) == {"hub-1"}
                 and len(fleet.lease_holders()) == len(ROLES), "hub-1 takes every lease",
                 30)  # fmt: skip
        figures["takeover"] = time.monotonic() - cut_at
        caller.join(130)
        assert "readyz" in answers, "a call to hub-0 hung in the partition (see the thread)"
        # Its database round trips vanished: it failed by its deadlines, as a 503.
        api, ready = answers["api"], answers["readyz"]
        assert api.status_code == 503, api.text
        assert api.json()["error"]["code"] == "store_unavailable", api.text
        assert ready.status_code == 503, ready.text
        final = _promote_to_the_end(fleet, fleet.admins[1], rid)
    finally:
        fleet.link.restore()
    wait_for(lambda: httpx.get(f"{hub0}/readyz", timeout=30).status_code == 200,
             "hub-0 ready after the heal", 60)  # fmt: skip
    figures["recovered"] = time.monotonic() - cut_at
    print(f"blackhole figures (s after the cut): {figures}")
    # hub-0 reads what hub-1 did, and its loops, back and contending, changed nothing.
    seen = _get(fleet.admins[0], f"/api/v1/rollouts/{rid}")
    assert seen["state"] == "succeeded", seen
    assert seen["history"] == final["history"], seen
    _no_duplicates(fleet, rid, final)
    wait_for(lambda: _active(fleet, "site-b", "hole") == 2, "site-b serving hole:2", 60)


def test_a_postgres_restart_under_running_hubs(pgfleet: PgFleet) -> None:
    fleet = pgfleet
    made: dict[str, int] = {}  # site name -> status of its create
    stop = threading.Event()
    outage = threading.Event()

    def writer() -> None:
        with httpx.Client(base_url=fleet.hubs[0].url, timeout=30) as http:
            auth = {"Authorization": f"Bearer {fleet.admins[0].token}"}
            n = 0
            while not stop.is_set():
                name = f"w-{n}"
                body = {"name": name, "labels": {"region": "eu-west", "tier": "t"}}
                try:
                    made[name] = http.post("/api/v1/sites", json=body, headers=auth).status_code
                except httpx.TransportError:
                    made[name] = -1
                n += 1
                if outage.is_set() and made[name] == 503:
                    stop.wait(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        wait_for(lambda: len(made) >= 3, "writes before the restart", 30)
        fleet.pg.stop()
        outage.set()
        for admin in fleet.admins:  # during the outage: a clear 503, never a 500
            response = httpx.get(f"{admin.url}/api/v1/sites", headers={
                "Authorization": f"Bearer {admin.token}"}, timeout=30)  # fmt: skip
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "store_unavailable", response.text
            ready = httpx.get(f"{admin.url}/readyz", timeout=30)
            assert ready.status_code == 503, ready.text
        wait_for(lambda: 503 in made.values(), "a write refused during the outage", 30)
        fleet.pg.start()
        for admin in fleet.admins:
            wait_for(lambda a=admin: httpx.get(f"{a.url}/readyz").status_code == 200,
                     "readiness back", 60)  # fmt: skip
        wait_for(lambda: list(made.values())[-3:] == [201] * 3, "writes after the restart", 60)
    finally:
        stop.set()
        thread.join()
    assert not {s for s in made.values() if s >= 500} - {503}, Counter(made.values())
    listed = {s["name"]: s for s in _get(fleet.admins[1], "/api/v1/sites")}
    for name, status in made.items():
        if status == 201:
            assert name in listed, f"{name} was acknowledged but is gone"
        if name in listed:  # acknowledged or not, a site is whole
            assert listed[name]["labels"] == {"region": "eu-west", "tier": "t"}, listed[name]
    for name in [n for n in listed if n.startswith("w-")]:
        fleet.admins[1].remove_site(name)
    # Leadership is taken again, once, and a site's long-poll sees a deployment made now.
    wait_for(lambda: len(fleet.lease_holders()) == len(ROLES), "every lease held again", 30)
    fleet.admins[0].push(write_tiny_onnx(fleet.root / "after.onnx", 3.0), "after")
    fleet.admins[0].deploy(
        {"ref": "after:1", "selector": "region=eu-west", "strategy": {"bake_s": 0}}
    )
    wait_for(lambda: _active(fleet, "site-a", "after") == 1, "site-a serving after:1", 60)


def test_terminating_the_leaders_sessions_moves_the_lease(pgfleet: PgFleet) -> None:
    fleet = pgfleet
    rid = _start_waves(fleet, "term", 10.0)
    before = fleet.lease_holders()
    leader = before["rollout controller"]
    killed = fleet.pg.sql(
        "SELECT pg_terminate_backend(a.pid) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = %s",
        leader,
    )
    assert killed, "the leader held no lease session"
    # The leader notices its session is gone, steps down; a replica takes the lease again.
    other = "hub-1" if leader == "hub-0" else "hub-0"
    wait_for(lambda: fleet.lease_holders().get("rollout controller") == other,
             "the other replica takes the lease", 30)  # fmt: skip
    index = int(leader[-1])
    wait_for(lambda: not fleet.admins[index].get_controller_status()["leader"],
             "the old leader to step down", 30)  # fmt: skip
    final = _promote_to_the_end(fleet, fleet.admins[1 - index], rid)
    _no_duplicates(fleet, rid, final)
    wait_for(lambda: _active(fleet, "site-b", "term") == 2, "site-b serving term:2", 60)


def test_sigkill_of_the_lease_holder_mid_rollout_and_mid_fl_job(pgfleet: PgFleet) -> None:
    fleet = pgfleet
    hub0 = fleet.hubs[0]
    # hub-0 takes every lease: hub-1 leaves (SIGTERM releases its locks) and comes back.
    fleet.hubs[1].stop()
    wait_for(lambda: set(fleet.lease_holders().values()) == {"hub-0"}, "hub-0 leads", 30)
    fleet.hubs[1].start(timeout=60)
    rid = _start_waves(fleet, "kill", 20.0)
    _start_fl(fleet, "flk")
    job_before = _get(fleet.admins[1], "/api/v1/federation/jobs/flk")
    assert job_before["round"] == 2, job_before
    hub0.kill()
    wait_for(lambda: set(fleet.lease_holders().values()) == {"hub-1"} and
             len(fleet.lease_holders()) == len(ROLES), "hub-1 takes every lease", 30)  # fmt: skip
    fleet.open_gate("open")  # type: ignore[arg-type]
    final = _promote_to_the_end(fleet, fleet.admins[1], rid)
    _no_duplicates(fleet, rid, final)
    _fl_finished_once(fleet, "flk")
    hub0.start(timeout=60)
