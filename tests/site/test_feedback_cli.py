"""``modelfleet site feedback``: a bad file or an unreachable site is one clear line and
exit 1, never a traceback (through the installed entry point)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "modelfleet"), "site", "feedback", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("labels.txt", "id,label\na,1\n", "use a .csv (id,label) or .jsonl file"),
        ("labels.csv", "request,truth\na,1\n", "needs a header with columns id and label"),
        ("labels.csv", "id,label\na,\n", "labels.csv:2: id and label must both be set"),
        ("labels.jsonl", '{"id": "a", "label": 1}\n{oops\n', "labels.jsonl:2: not JSON"),
        ("labels.jsonl", '["a", 1]\n', 'expected {"id": ..., "label": ...}'),
        ("labels.csv", "id,label\na,1\n", "cannot reach the site"),
    ],
)
def test_bad_files_and_unreachable_sites_are_one_line(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    site = f"http://127.0.0.1:{free_port()}"
    result = run(str(path), "--model", "m", "--site", site, "--token", "t")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert message in result.stderr, result.stderr


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    result = run(str(tmp_path / "none.csv"), "--model", "m")
    assert result.returncode == 1
    assert "cannot read" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_has_examples() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "modelfleet site feedback failures.csv --model machine-health" in result.stdout
