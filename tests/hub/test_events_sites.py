"""Events from a real hub and site: ``site.offline`` when the site stops reporting and
``site.online`` when it is back (each once), ``key.rotated`` from ``hub key rotate`` on the
data directory of the running hub, and an event stream that the hub's stop ends at once
rather than holding the shutdown."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelfleet.api.events import Event
from modelfleet.errors import ModelfleetError
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess
from tests.conftest import trust_fleet_ca
from tests.waiting import wait_for
from tests.webhook_receiver import receiver

HUB_ENV = {"MODELFLEET_HUB_OFFLINE_AFTER_S": "2"}
SITE_ENV = {"MODELFLEET_SITE_REPORT_INTERVAL_S": "0.5"}


@dataclass
class One:
    root: Path
    hub: HubProcess
    site: SiteProcess
    admin: HubClient


@pytest.fixture
def one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[One]:
    init = init_hub(tmp_path / "hub")
    hub = HubProcess(tmp_path / "hub", extra_env=HUB_ENV).start()
    trust_fleet_ca(monkeypatch, hub.ca_file)
    admin = HubClient(hub.url, init.admin_token)
    token = admin.add_site("plant", {"region": "eu-west"})["enrollment_token"]
    site = SiteProcess(tmp_path / "site", hub.url, token, extra_env=SITE_ENV)
    try:
        site.start(timeout=60)
        yield One(tmp_path, hub, site, admin)
    finally:
        site.stop()
        admin.close()
        hub.stop()


def _types(admin: HubClient, subject: str) -> list[str]:
    return [e.type for e in admin.list_events(types=["site.*"]) if e.subject == subject]


def test_site_offline_then_online_once_each(one: One) -> None:
    wait_for(lambda: one.admin.get_site("plant").online, timeout=30, what="site online")
    assert _types(one.admin, "plant") == []  # first seen online: nothing to tell
    one.site.stop()
    wait_for(lambda: _types(one.admin, "plant") == ["site.offline"], timeout=30, what="offline")
    one.site.start(timeout=60)
    wait_for(
        lambda: _types(one.admin, "plant") == ["site.offline", "site.online"],
        timeout=30,
        what="online again",
    )
    offline = one.admin.list_events(types=["site.offline"])[0]
    assert offline.payload["site"] == "plant"
    assert offline.payload["last_seen"]
    # A restarted hub reads back what it last told: nothing is told twice.
    one.hub.kill()
    one.hub.start()
    wait_for(lambda: one.admin.get_site("plant").online, timeout=30, what="site online")
    # For longer than an offline period (2 s): a hub that was down flags nobody offline.
    stays = time.monotonic() + 4
    wait_for(
        lambda: (
            _types(one.admin, "plant") != ["site.offline", "site.online"]
            or time.monotonic() > stays
        ),
        timeout=30,
        what="an offline period after the restart",
    )
    assert _types(one.admin, "plant") == ["site.offline", "site.online"]


def test_key_rotation_is_an_event(one: One) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modelfleet", "hub", "key", "rotate", "--data-dir",
         str(one.root / "hub")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rotated = one.admin.list_events(types=["key.*"])
    assert [e.type for e in rotated] == ["key.rotated"]
    assert rotated[0].payload["key_id"] == rotated[0].subject
    assert rotated[0].payload["previous"] != rotated[0].subject


def test_stream_ends_when_the_hub_stops(one: One) -> None:
    seen: list[Event] = []
    ended = threading.Event()
    hc = HubClient(one.hub.url, one.admin.token)

    def run() -> None:
        with contextlib.suppress(ModelfleetError):
            seen.extend(hc.stream_events(after=0, read_timeout=120))
        ended.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    one.site.stop()
    wait_for(lambda: any(e.type == "site.offline" for e in seen), timeout=30, what="live event")
    assert not ended.is_set()
    one.hub.stop()  # SIGTERM: the stream is answered to its end, not held until cut
    assert ended.wait(10), "the stream outlived the hub"
    code = one.hub.proc.returncode if one.hub.proc is not None else None
    assert code == 0, code
    hc.close()


def test_federated_job_finished_is_an_event(one: One) -> None:
    import onnx

    from modelfleet.federation.specs import ModelSpec, build_onnx, init_weights

    spec = ModelSpec(family="softmax", features=4, classes=2)
    path = one.root / "init.onnx"
    onnx.save(build_onnx(spec, init_weights(spec)), str(path))
    one.admin.push(path, "fl-model")
    job = one.admin.start_federated_job(
        {"id": "job-ev", "model": "fl-model", "sites": "region=nowhere", "rounds": 1,
         "min_sites": 1, "wait_for_sites_s": 600, "data": "digits"}
    )  # fmt: skip
    assert job.state == "running"
    one.admin.abort_federated_job("job-ev", "not needed")
    finished = one.admin.list_events(types=["fl.*"])
    assert [(e.type, e.subject) for e in finished] == [("fl.job_finished", "job-ev")]
    assert finished[0].payload["state"] == "aborted"
    assert finished[0].payload["message"] == "not needed"


def test_a_hanging_target_does_not_delay_a_healthy_one(one: One) -> None:
    with receiver(200, hang_s=120) as stuck, receiver(200) as healthy:
        slow = one.admin.create_webhook(stuck.url + "/hook", ["key.*"], max_attempts=1)
        one.admin.create_webhook(healthy.url + "/hook", ["key.*"])
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-m", "modelfleet", "hub", "key", "rotate", "--data-dir",
                 str(one.root / "hub")],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        ids = [e.id for e in one.admin.list_events(types=["key.rotated"])]
        wait_for(lambda: healthy.ids() == ids, timeout=30, what="the healthy target")
        # The hanging target has acknowledged nothing (it never answers within the timeout):
        # its events end as dead letters, with the timeout as the reason.
        assert stuck.ids()[:1] == ids[:1]

        def dead() -> list[int]:
            return [d.event_id for d in one.admin.list_dead_letters(slow.id)]

        wait_for(lambda: dead() == ids, timeout=60, what="dead letters of the hanging target")
        reasons = {d.last_error for d in one.admin.list_dead_letters(slow.id)}
        assert all("Timeout" in r for r in reasons), reasons


def test_follow_rides_out_a_hub_restart(one: One) -> None:
    follower = subprocess.Popen(
        [sys.executable, "-m", "modelfleet", "events", "--follow", "--json", "--type", "key.*",
         "--hub", one.hub.url, "--token", one.admin.token or ""],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[dict[str, object]] = []

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.append(json.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        _rotate(one)
        wait_for(lambda: len(lines) == 1, timeout=30, what="the first event, live")
        one.hub.kill()
        one.hub.start()
        _rotate(one)
        wait_for(lambda: len(lines) == 2, timeout=60, what="the event after the restart")
        assert [line["type"] for line in lines] == ["key.rotated", "key.rotated"]
        assert lines[0]["id"] != lines[1]["id"]
        assert follower.poll() is None  # still following
    finally:
        follower.terminate()
        follower.wait(10)
    assert follower.stderr is not None
    assert "Traceback" not in follower.stderr.read()


def _rotate(one: One) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modelfleet", "hub", "key", "rotate", "--data-dir",
         str(one.root / "hub")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
