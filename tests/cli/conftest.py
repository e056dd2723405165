"""Fixtures of the CLI tests: a real hub process and a way to run the CLI against it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.sim.launcher import HubProcess
from tests.conftest import trust_fleet_ca


@dataclass
class RunningHub:
    process: HubProcess
    token: str

    def cli(
        self, *args: str, token: str | None = "default", cwd: Path | None = None, columns: int = 160
    ):
        env = {**os.environ, "MODELFLEET_HUB_URL": self.process.url, "COLUMNS": str(columns)}
        env.pop("MODELFLEET_TOKEN", None)
        if token is not None:
            env["MODELFLEET_TOKEN"] = self.token if token == "default" else token
        return subprocess.run(
            [sys.executable, "-m", "modelfleet", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            timeout=120,
        )


@pytest.fixture
def running_hub(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningHub]:
    init = init_hub(tmp_path / "hub")
    plain = request.node.get_closest_marker("plain_http") is not None
    process = HubProcess(tmp_path / "hub", tls=not plain).start()
    if not plain:
        trust_fleet_ca(monkeypatch, process.ca_file)
    try:
        yield RunningHub(process, init.admin_token)
    finally:
        process.stop()
