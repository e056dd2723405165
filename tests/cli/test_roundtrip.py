"""The CLI against a real hub process on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from modelfleet.cli.main import app
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from tests.cli.conftest import RunningHub
from tests.recording_proxy import RecordingProxy


def test_push_ls_show_alias_pull(running_hub: RunningHub, tiny_onnx, tmp_path: Path) -> None:
    first, second = tiny_onnx(), tiny_onnx()
    pushed = running_hub.cli(
        "model", "push", str(first), "--name", "pump", "--training-region", "eu-west",
        "--alias", "production", "--json",
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["version"] == 1
    assert running_hub.cli("model", "push", str(second), "--name", "pump").returncode == 0

    listing = running_hub.cli("model", "ls", "--json")
    assert [(m["name"], m["latest_version"]) for m in json.loads(listing.stdout)] == [("pump", 2)]
    table = running_hub.cli("model", "ls")
    assert "pump" in table.stdout
    assert "production->1" in table.stdout

    shown = running_hub.cli("model", "show", "pump@production", "--json")
    assert json.loads(shown.stdout)["version"] == 1
    human = running_hub.cli("model", "show", "pump:2")
    assert "X:FP32[?,4] -> Y:FP32[?,4]" in human.stdout
    versions = running_hub.cli("model", "show", "pump")
    assert "production" in versions.stdout

    moved = running_hub.cli("model", "alias", "pump", "2", "production")
    assert moved.returncode == 0, moved.stderr
    out = tmp_path / "pulled.onnx"
    pulled = running_hub.cli("model", "pull", "pump@production", "-o", str(out))
    assert pulled.returncode == 0, pulled.stderr
    assert "verified" in pulled.stdout
    assert out.read_bytes() == second.read_bytes()
    assert not out.with_name("pulled.onnx.part").exists()

    audit = json.loads(running_hub.cli("audit", "--json").stdout)
    assert {"model.push", "model.alias"} <= {a["action"] for a in audit}


def write_wide_onnx(path: Path, width: int = 200_000) -> Path:
    """Y = X @ W with W [4, width]: a valid model of a few MB, several 1 MiB download chunks."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", width])
    weights = numpy_helper.from_array(
        np.random.default_rng(0).normal(size=(4, width)).astype(np.float32), "W"
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])], "wide", [x], [y], initializer=[weights]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


# Plain HTTP: the proxy finds the artifact request and cuts its response by reading the
# bytes on the wire, which TLS would hide from it.
@pytest.mark.plain_http
def test_pull_resumes_an_interrupted_download_with_range(
    running_hub: RunningHub, tmp_path: Path
) -> None:
    """A real download cut mid-body (by a proxy in front of the hub) keeps its partial file;
    the same command again asks for exactly the missing bytes and ends with the whole."""
    model = write_wide_onnx(tmp_path / "wide.onnx")
    data = model.read_bytes()
    with HubClient(running_hub.process.url, running_hub.token) as hc:
        hc.push(model, "pump")
    dest = tmp_path / "resume.onnx"
    partial = dest.with_name("resume.onnx.part")
    proxy = RecordingProxy(running_hub.process.port)
    try:
        proxy.cut_response(b"/artifact", after_bytes=len(data) // 2)
        cut = running_hub.cli("model", "pull", "pump:1", "-o", str(dest), "--hub", proxy.url)
        assert cut.returncode == 1, (cut.stdout, cut.stderr)
        assert "run the same command again to resume" in cut.stderr
        assert proxy.response_cut.is_set()
        have = partial.stat().st_size
        assert 0 < have < len(data)
        assert partial.read_bytes() == data[:have]
        assert not dest.exists()

        again = running_hub.cli("model", "pull", "pump:1", "-o", str(dest), "--hub", proxy.url)
        assert again.returncode == 0, again.stderr
        assert "verified" in again.stdout
        first, resumed = proxy.requests_with(b"/artifact")
    finally:
        proxy.close()
    assert b"range:" not in first.lower()
    assert f"range: bytes={have}-\r\n".encode() in resumed.lower()  # the right offset
    assert dest.read_bytes() == data
    assert not partial.exists()


def test_pull_refuses_wrong_pinned_key(running_hub: RunningHub, tiny_onnx, tmp_path: Path) -> None:
    running_hub.cli("model", "push", str(tiny_onnx()), "--name", "pump")
    other = init_hub(tmp_path / "other-hub").public_key
    out = tmp_path / "x.onnx"
    result = running_hub.cli("model", "pull", "pump:1", "-o", str(out), "--public-key", other)
    assert result.returncode == 1
    assert "signature" in result.stderr.lower()
    assert not out.exists()


def test_cli_errors_are_one_line(running_hub: RunningHub, tiny_onnx, tmp_path: Path) -> None:
    cases = [
        (("model", "ls"), None, "missing bearer token"),
        (
            ("model", "push", str(tmp_path / "missing.onnx"), "--name", "pump"),
            "default",
            "no such file",
        ),
        (("model", "show", "pump@canary"), "default", "does not exist"),
        (("model", "show", "bad name"), "default", "invalid model name"),
        (("token", "create", "--role", "superuser"), "default", "invalid role"),
    ]
    text = tmp_path / "model.txt"
    text.write_text("hello")
    cases.append((("model", "push", str(text), "--name", "pump"), "default", "not an ONNX"))
    for args, token, needle in cases:
        result = running_hub.cli(*args, token=token)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert needle.lower() in result.stderr.lower(), (args, result.stderr)
    down = subprocess.run(
        [sys.executable, "-m", "modelfleet", "model", "ls", "--hub", "http://127.0.0.1:1"],
        capture_output=True, text=True, env={**os.environ, "MODELFLEET_TOKEN": "x"}, timeout=60,
    )  # fmt: skip
    assert down.returncode == 1
    assert "cannot reach the hub" in down.stderr


def test_tokens_through_cli(running_hub: RunningHub) -> None:
    created = json.loads(running_hub.cli("token", "create", "--role", "viewer", "--json").stdout)
    listing = json.loads(running_hub.cli("token", "ls", "--json").stdout)
    assert created["id"] in {t["id"] for t in listing}
    assert running_hub.cli("model", "ls", token=created["token"]).returncode == 0
    assert running_hub.cli("token", "revoke", created["id"]).returncode == 0
    refused = running_hub.cli("model", "ls", token=created["token"])
    assert refused.returncode == 1
    assert "revoked" in refused.stderr


def test_twenty_parallel_pushes_get_consecutive_versions(
    running_hub: RunningHub, tiny_onnx
) -> None:
    files = [tiny_onnx() for _ in range(20)]
    with (
        HubClient(running_hub.process.url, running_hub.token) as hc,
        ThreadPoolExecutor(20) as pool,
    ):
        results = list(pool.map(lambda f: hc.push(f, "pump"), files))
        versions = sorted(r["version"] for r in results)
        assert versions == list(range(1, 21))
        assert len({r["digest"] for r in results}) == 20
        assert hc.get_model("pump")["version_count"] == 20


def test_every_command_has_help() -> None:
    commands = [
        ("hub",), ("hub", "init"), ("hub", "serve"), ("model",), ("model", "push"),
        ("model", "ls"), ("model", "show"), ("model", "alias"), ("model", "pull"), ("token",),
        ("token", "create"), ("token", "ls"), ("token", "revoke"), ("audit",), ("demo",),
    ]  # fmt: skip
    # The entry point itself, once, as a user starts it; the subcommands in process (the
    # same Typer app, without a fresh interpreter per command).
    result = subprocess.run(
        [sys.executable, "-m", "modelfleet", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    runner = CliRunner()
    for command in commands:
        shown = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
        assert shown.exit_code == 0, (command, shown.output)
        assert "Usage" in shown.output, (command, shown.output)
