"""A ``site serve --enroll`` that fails leaves the state directory as it found it.

Issue 17 (item 11): every failed enrollment left an empty state directory behind (with a
``state.db``), which the next attempt then tripped over. The command is run as a user
runs it, against a real hub, for each way enrollment fails: a refused token, no hub at the
address, a CA that does not match the token's fingerprint.
"""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess, reserve_port
from tests.conftest import trust_fleet_ca


class Hub:
    def __init__(self, root: Path, mp: pytest.MonkeyPatch) -> None:
        init = init_hub(root / "hub")
        self.process = HubProcess(root / "hub").start()
        trust_fleet_ca(mp, self.process.ca_file)
        self.admin = HubClient(self.process.url, init.admin_token)
        # A genuine token: its fingerprint is the hub's CA's; its secret is then altered.
        self.token = self.admin.add_site("plant", {"region": "eu-west"})["enrollment_token"]

    @property
    def url(self) -> str:
        return self.process.url

    def refused_token(self) -> str:
        secret, _, fingerprint = self.token.partition("@")
        return f"{secret[:-4]}xxxx@{fingerprint}"

    def foreign_ca_token(self) -> str:
        secret, _, _ = self.token.partition("@")
        return f"{secret}@{'A' * 43}"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    mp = pytest.MonkeyPatch()
    made = Hub(tmp_path_factory.mktemp("enroll-cleanup"), mp)
    try:
        yield made
    finally:
        made.admin.close()
        made.process.stop()
        mp.undo()


def serve_cmd(hub_url: str, token: str, state_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "modelfleet", "site", "serve", "--hub", hub_url,
        "--enroll", token, "--state-dir", str(state_dir), "--port", "0",
    ]  # fmt: skip


def enroll(hub_url: str, token: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        serve_cmd(hub_url, token, state_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )


def failed_cleanly(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_a_refused_token_removes_the_directory_it_created(hub: Hub, tmp_path: Path) -> None:
    state_dir = tmp_path / "site"
    result = enroll(hub.url, hub.refused_token(), state_dir)
    failed_cleanly(result)
    assert not state_dir.exists()


def test_no_hub_at_the_address_removes_the_parents_it_created_too(hub: Hub, tmp_path: Path) -> None:
    nobody = reserve_port()  # held, never listening: connections are refused
    try:
        state_dir = tmp_path / "new" / "nested" / "site"
        result = enroll(f"https://127.0.0.1:{nobody.port}", hub.token, state_dir)
    finally:
        nobody.close()
    failed_cleanly(result)
    assert "cannot reach the hub" in result.stderr
    assert not (tmp_path / "new").exists()


def test_a_ca_that_does_not_match_the_fingerprint_leaves_no_directory(
    hub: Hub, tmp_path: Path
) -> None:
    state_dir = tmp_path / "site"
    result = enroll(hub.url, hub.foreign_ca_token(), state_dir)
    failed_cleanly(result)
    assert "fingerprint" in result.stderr
    assert not state_dir.exists()


def test_an_existing_directory_keeps_its_entries_and_mode(hub: Hub, tmp_path: Path) -> None:
    state_dir = tmp_path / "site"
    state_dir.mkdir()
    (state_dir / "README").write_text("the operator's own notes\n")
    state_dir.chmod(0o755)

    result = enroll(hub.url, hub.refused_token(), state_dir)

    failed_cleanly(result)
    assert sorted(p.name for p in state_dir.iterdir()) == ["README"]
    assert (state_dir / "README").read_text() == "the operator's own notes\n"
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o755


def test_the_genuine_token_still_enrolls_after_the_failures(hub: Hub, tmp_path: Path) -> None:
    """The failures above spent nothing: the token the refusals were made from works."""
    state_dir = tmp_path / "site"
    result = enroll(hub.url, hub.refused_token(), state_dir)
    failed_cleanly(result)
    site = subprocess.Popen(
        [*serve_cmd(hub.url, hub.token, state_dir), "--ready-file", str(tmp_path / "ready.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while not (tmp_path / "ready.json").exists():
            assert site.poll() is None, "the site exited"
            assert time.monotonic() < deadline, "the site did not start listening"
            time.sleep(0.05)
        assert (state_dir / "state.db").exists()
        assert hub.admin.get_site("plant")["enrolled_at"] is not None
    finally:
        site.terminate()
        site.wait(30)
