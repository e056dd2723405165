"""One fleet for the docs tests: the README's tour, run as written, in a fresh directory."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.readme import FASTER, PORTS, README_TABLE, tour_blocks
from tests.docs.shell import Shell
from tests.docs.tour import Tour


@pytest.fixture(scope="package")
def tour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tour]:
    """The README's tour, run to its end: the guides' blocks then run in the fleet it left
    (hub, three sites, gateway) and in its directory, with its environment.

    The environment is a fresh user's: no MODELFLEET_* settings but :data:`FASTER`, the venv's
    bin/ first on PATH, the SDK's cache inside the directory, a 100-column terminal.
    """
    cwd = tmp_path_factory.mktemp("tour")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELFLEET_", "SSL_CERT"))}
    env.update(FASTER)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["XDG_CACHE_HOME"] = str(cwd / ".cache")
    env["COLUMNS"] = "100"
    shell = Shell(cwd, env)
    try:
        tour = Tour(shell, PORTS)
        tour.run_blocks(tour_blocks(), README_TABLE, script_prefix="readme")
        yield tour
    finally:
        shell.close()
