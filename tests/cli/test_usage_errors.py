"""Usage errors through the installed entry point, whatever copy of click typer carries:
exit 2, a usage line and one error line, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "modelfleet"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"MODELFLEET_HUB_URL": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("model", "ls", "--no-such-option"), "Error: No such option: --no-such-option"),
        (("no-such-command",), "Error: No such command 'no-such-command'."),
        (("deploy",), "Error: Missing argument"),
        (("model", "ls", "--hub"), "Error: Option '--hub' requires an argument."),
    ],
)
def test_usage_error_is_a_message_not_a_traceback(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(message), result.stderr
    if args[-1] != "--hub":  # click names the option alone when its value is missing
        assert result.stderr.startswith("Usage: modelfleet"), result.stderr


def test_refusal_is_one_line_and_exit_1() -> None:
    result = run("model", "ls")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: cannot reach the hub")
