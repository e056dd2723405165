"""Plain HTTP is always said out loud: ``site serve`` wants the same flags as ``hub serve``,
and ``status`` warns when the hub or sites are reached in clear."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import RunningHub


def site_serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelfleet", "site", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
        cwd=tmp_path,  # the default ./site-state lands here
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # Nothing listens on the discard port: each refusal comes before any connection,
        # so no enrollment token is spent.
        (("--hub", "http://127.0.0.1:9", "--enroll", "x"), "add --insecure-http"),
        (
            (
                "--hub",
                "http://127.0.0.1:9",
                "--enroll",
                "x",
                "--insecure-http",
                "--host",
                "0.0.0.0",
            ),
            "refusing plain HTTP on 0.0.0.0",
        ),
        (("--hub", "https://127.0.0.1:9", "--enroll", "x", "--insecure-http"), "drop the flag"),
        (("--hub", "https://127.0.0.1:9", "--insecure-http-allow-remote"), "only makes sense"),
    ],
)
def test_site_serve_plain_http_needs_the_flags_hub_serve_needs(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = site_serve(tmp_path, *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert message in result.stderr, result.stderr


def test_status_over_tls_has_no_warning(running_hub: RunningHub) -> None:
    result = running_hub.cli("status")
    assert result.returncode == 0, result.stderr
    assert "plain HTTP" not in result.stderr


# Plain HTTP on purpose: the warning about it is what is tested.
@pytest.mark.plain_http
def test_status_warns_when_the_hub_is_plain_http(running_hub: RunningHub) -> None:
    result = running_hub.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    assert "warning: the hub http://127.0.0.1" in result.stderr
    assert "plain HTTP" in result.stderr
    assert result.stdout.lstrip().startswith("{")  # the JSON document alone on stdout
