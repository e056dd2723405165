"""A real hub and three real site processes: an evaluation from the CLI to the verdict.

Two held-out sites hold labelled data; the third names a data file that is not there.
The registry holds a bad classifier as ``production`` and a good one as ``candidate``.
``modelfleet evaluate ... --wait --json`` must pick the candidate, show the third site's
refusal with its reason, and nothing a site sends may carry a row: every byte one site
sends the hub passes through a recording proxy (plain HTTP on loopback, so it is
readable), and no feature value ever appears in it, while its evaluation answer holds
counts and nothing else.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, SiteProcess
from tests.hub.evaluation_support import SENTINEL, classifiers, labelled, write_csv
from tests.recording_proxy import RecordingProxy
from tests.waiting import wait_for

ROWS = 300
EVAL_FRACTION = 0.5


def site_config(root: Path, name: str, data: Path) -> Path:
    config = {
        "datasets": {
            "plant": {"path": str(data), "label": "label", "eval_fraction": EVAL_FRACTION}
        },
        "federation": {"participate": True},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def request_bodies(sent: bytes, marker: bytes) -> list[bytes]:
    """The bodies of the recorded requests whose request line contains ``marker``."""
    bodies = []
    for match in re.finditer(rb"(POST|PUT) ([^ ]+) HTTP/1\.1\r\n(.*?)\r\n\r\n", sent, re.S):
        if marker not in match.group(2):
            continue
        length = re.search(rb"(?i)content-length: *(\d+)", match.group(3))
        size = int(length.group(1)) if length else 0
        bodies.append(sent[match.end() : match.end() + size])
    return bodies


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[HubProcess, HubClient, RecordingProxy]]:
    init = init_hub(tmp_path / "hub")
    hub = HubProcess(tmp_path / "hub", tls=False).start(timeout=60)
    admin = HubClient(hub.url, init.admin_token)
    proxy = RecordingProxy(hub.port)
    good, bad = classifiers(tmp_path)
    admin.push(bad, "clf", alias="production")
    admin.push(good, "clf", alias="candidate")
    data = {
        "plant-a": write_csv(tmp_path / "a.csv", *labelled(10, ROWS)),
        "plant-b": write_csv(tmp_path / "b.csv", *labelled(11, ROWS)),
        "plant-c": tmp_path / "missing.csv",  # configured, but the file is not there
    }
    sites: list[SiteProcess] = []
    try:
        for name, path in data.items():
            token = admin.add_site(name, {"role": "holdout"})["enrollment_token"]
            sites.append(
                SiteProcess(
                    tmp_path / f"site-{name}",
                    proxy.url if name == "plant-a" else hub.url,
                    token,
                    extra_env={
                        "MODELFLEET_SITE_CONFIG_FILE": str(site_config(tmp_path, name, path)),
                        "MODELFLEET_SITE_RETRY_MAX_S": "1",
                        "MODELFLEET_SITE_EVAL_POLL_S": "5",
                    },
                    log_level="info",
                ).start(timeout=60)
            )

        def ready() -> bool:
            consents = admin.get_federation_consents()
            online = {s.name for s in admin.list_sites() if s.online}
            return set(data) <= set(consents) and set(data) <= online

        wait_for(ready, "every site to report and declare its consent")
        yield hub, admin, proxy
    finally:
        for site in sites:
            site.stop()
        proxy.close()
        admin.close()
        hub.stop()


def test_the_better_version_wins_and_no_row_leaves_a_site(fleet) -> None:
    hub, admin, proxy = fleet
    env = {**os.environ, "MODELFLEET_HUB_URL": hub.url, "MODELFLEET_TOKEN": admin.token}
    done = subprocess.run(
        [sys.executable, "-m", "modelfleet", "evaluate", "clf",
         "--versions", "candidate,production", "--sites", "role=holdout",
         "--deadline", "120", "--wait", "--json"],
        capture_output=True, text=True, env=env, timeout=200, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ev = json.loads(done.stdout)
    assert ev["state"] == "completed", ev
    assert ev["winner"] == 2
    assert ev["versions"] == [2, 1]
    assert ev["beats"]["candidate_vs_production"]["beats"] is True
    held_out = round(EVAL_FRACTION * ROWS)
    for name in ("plant-a", "plant-b"):
        site = ev["sites"][name]
        assert site["status"] == "answered", site
        assert site["scores"]["2"]["count"] == held_out
        assert site["scores"]["2"]["value"] > 0.9 > 0.1 > site["scores"]["1"]["value"]
    assert ev["per_version"]["2"]["count"] == 2 * held_out
    refusal = ev["sites"]["plant-c"]
    assert refusal["status"] == "refused"
    assert "missing.csv" in refusal["reason"]
    assert "plant" in refusal["reason"]
    events = admin.request("GET", "/api/v1/events", params={"types": "evaluation.completed"}).json()
    assert [e["payload"]["winner"] for e in events if e["subject"] == ev["id"]] == [2]

    # What plant-a sent the hub: its answer is counts only, and no feature value of any
    # row (every row carries the sentinel) appears anywhere in its traffic.
    sent = bytes(proxy.sent)
    assert b"/api/v1/evaluations/sites/plant-a/tasks" in sent
    assert str(SENTINEL).encode() not in sent
    answers = request_bodies(sent, f"/api/v1/evaluations/{ev['id']}/".encode())
    assert len(answers) == 1
    answer = json.loads(answers[0])
    assert set(answer) == {"scores"}
    assert set(answer["scores"]) == {"1", "2"}
    for counts in answer["scores"].values():
        assert set(counts) == {"count", "total"}
        assert counts["count"] == held_out

    # The table view, and bad input as one line each (never a traceback).
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "modelfleet", "evaluate", "clf", *args],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip

    shown = cli("--versions", "candidate,production", "--sites", "role=holdout")
    assert shown.returncode == 0, shown.stderr
    assert "candidate_vs_production" in shown.stdout
    assert "plant-c" in shown.stdout
    # Nobody has a data set of that name: every site is refused up front, the evaluation
    # fails at once, and --wait says so with exit status 1.
    failed = cli("--versions", "candidate,production", "--data", "hospital", "--wait")
    assert failed.returncode == 1, failed.stdout
    assert "no data set 'hospital'" in failed.stdout
    assert "failed" in failed.stdout
    for args, message in [
        (("--versions", "candidate"), "--versions needs at least two versions"),
        (("--versions", "candidate,staging"), "no alias 'staging'"),
        (("--versions", "1,2", "--sites", "=x"), "invalid selector term"),
        (("--versions", "1,2", "--rows", "some"), "rows"),
    ]:
        bad = cli(*args)
        assert bad.returncode == 1, (args, bad.stdout)
        assert bad.stderr.startswith("error: "), bad.stderr
        assert message in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
