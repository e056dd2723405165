"""Every CLI command given a bad value, one per option class (a number out of range, an
unknown name, a malformed selector or reference, a missing file), through the CLI's entry
function against a real hub (one of each class in a fresh interpreter): exit 2 (a usage
error, click's) or 1 (refused, ours), one line saying what is wrong with which option,
never a traceback or pydantic's report."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest

from modelfleet.federation.specs import ModelSpec, build_onnx, init_weights
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess

USAGE, REFUSED = 2, 1


@dataclass(frozen=True)
class Hub:
    url: str
    token: str
    env: dict[str, str]
    model: Path  # a valid ONNX file, for the command lines that need one ({model})


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """One hub for the whole table: a spec-built model `digits` with alias `production`,
    one site `plant-a`; the bad values change nothing (every call is refused)."""
    root = tmp_path_factory.mktemp("bad-values")
    init = init_hub(root / "hub")
    process = HubProcess(root / "hub").start()
    env = {
        **os.environ,
        "MODELFLEET_HUB_URL": process.url,
        "MODELFLEET_TOKEN": init.admin_token,
        "MODELFLEET_CA_FILE": str(process.ca_file),
        "COLUMNS": "100",
    }
    try:
        spec = ModelSpec(family="softmax", features=4, classes=2)
        model = root / "digits.onnx"
        onnx.save(build_onnx(spec, init_weights(spec)), str(model))
        with HubClient(process.url, init.admin_token, ca_file=process.ca_file) as admin:
            admin.push(model, "digits", alias="production")
            admin.add_site("plant-a", {"region": "eu-west", "jurisdiction": "EU"})
        yield Hub(process.url, init.admin_token, env, model)
    finally:
        process.stop()


# (command line, exit code, a fragment the one line must hold: the option or the name)
NUMBER_OUT_OF_RANGE = [
    (["fl", "simulate", "--sites", "0"], USAGE, "'--sites'"),
    (["fl", "simulate", "--shards-per-site", "0"], USAGE, "'--shards-per-site'"),
    (["fl", "simulate", "--lr", "-1"], USAGE, "'--lr'"),
    (["fl", "simulate", "--lr", "0"], USAGE, "0 < LR <= 100"),
    (["fl", "simulate", "--batch-size", "0"], USAGE, "'--batch-size'"),
    (["fl", "simulate", "--sites", "3", "--poisoned", "5"], USAGE, "'--poisoned'"),
    (
        ["fl", "simulate", "--sites", "3", "--strategy", "krum", "--param", "byzantine=2"],
        USAGE,
        "needs at least 7 sites",
    ),
    (["fl", "simulate", "--sites", "700", "--shards-per-site", "3"], REFUSED, "at most 479"),
    (["fl", "simulate", "--clip", "-3"], REFUSED, "--clip"),
    (["fl", "start", "--model", "digits", "--data", "d", "--rounds", "0"], USAGE, "'--rounds'"),
    (
        ["fl", "start", "--model", "digits", "--data", "d", "--rounds", "1", "--lr", "0"],
        USAGE,
        "'--lr'",
    ),
    (["fl", "init", "m", "--classes", "1"], USAGE, "'--classes'"),
    (["model", "alias", "digits", "0", "prod"], USAGE, "'version'"),
    (["audit", "--limit", "0"], USAGE, "'--limit'"),
    (["status", "--interval", "0"], USAGE, "'--interval'"),
    (["token", "create", "--role", "viewer", "--ttl", "9999d"], REFUSED, "TTL '9999d'"),
    (["site", "add", "plant-b", "--ttl", "-5"], REFUSED, "TTL '-5'"),
    (["sim", "wan", "--listen", "x:1", "--upstream", "y:2", "--loss", "2"], USAGE, "'--loss'"),
    (["hub", "serve", "--port", "70000"], USAGE, "'--port'"),
    (["hub", "cert", "issue", "--name", "gw", "--out", "x", "--days", "398"], USAGE, "'--days'"),
]
UNKNOWN_NAME = [
    (["model", "show", "nope"], REFUSED, "nope"),
    (["model", "pull", "digits@nope"], REFUSED, "nope"),
    (["site", "show", "nope"], REFUSED, "nope"),
    (["site", "unassign", "nope", "digits"], REFUSED, "nope"),
    (["policy", "rm", "nope"], REFUSED, "nope"),
    (["token", "revoke", "nope"], REFUSED, "nope"),
    (["token", "create", "--role", "emperor"], REFUSED, "emperor"),
    (["drift", "nope"], REFUSED, "nope"),
    (["drift", "digits@nope"], REFUSED, "nope"),
    (["drift", "digits", "--site", "nope"], REFUSED, "nope"),
    (["fl", "status", "nope"], REFUSED, "nope"),
    (["fl", "abort", "nope"], REFUSED, "nope"),
    (["fl", "start", "--model", "nope", "--data", "d", "--rounds", "1"], REFUSED, "nope"),
    (["fl", "simulate", "--strategy", "nope"], REFUSED, "nope"),
    (["fl", "simulate", "--poison", "nope"], USAGE, "'--poison'"),
    (["sim", "wan", "--listen", "x:1", "--upstream", "y:2", "--loss-mode", "x"], USAGE, "mode"),
]
MALFORMED = [
    (["fl", "init", "m", "--family", "mlp", "--hidden", "a,b"], REFUSED, "--hidden"),
    (
        ["fl", "start", "--model", "digits", "--data", "d", "--rounds", "1", "--clip-norm", "0"],
        REFUSED,
        "--clip-norm",
    ),
    (["hub", "serve", "--log-level", "loud", "--port", "0"], REFUSED, "--log-level"),
    (
        ["fl", "start", "--model", "digits", "--data", "d", "--rounds", "1", "--sites", "a in ("],
        REFUSED,
        "selector",
    ),
    (["token", "create", "--role", "infer", "--sites", "region in"], REFUSED, "selector"),
    (["drift", "digits:x"], REFUSED, "digits:x"),
    (["drift", "digits", "--set", "psi"], REFUSED, "--set"),
    (["model", "show", "Bad Name!"], REFUSED, "Bad Name!"),
    (["site", "add", "plant-b", "-l", "novalue"], REFUSED, "--label"),
    (["site", "assign", "plant-a", "digits", "--params", "{not json"], REFUSED, "--params"),
    (
        ["fl", "start", "--model", "digits", "--data", "d", "--rounds", "1", "--param", "k"],
        REFUSED,
        "--param",
    ),
    (["model", "ls", "--hub", "https://127.0.0.1:8700/api/v1"], REFUSED, "without /api/v1"),
    (["model", "ls", "--hub", "127.0.0.1:8700"], REFUSED, "--hub"),
]
MISSING_FILE = [
    (
        ["model", "push", "{model}", "-n", "m", "--reference-data", "/nonexistent/ref.csv"],
        REFUSED,
        "/nonexistent/ref.csv",
    ),
    (["model", "push", "/nonexistent/model.onnx", "-n", "m"], REFUSED, "/nonexistent/model.onnx"),
    (["policy", "apply", "-f", "/nonexistent/policy.yaml"], REFUSED, "/nonexistent/policy.yaml"),
    (["fl", "start", "-f", "/nonexistent/job.yaml"], REFUSED, "/nonexistent/job.yaml"),
]


def _run(hub: Hub, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelfleet", *(a.replace("{model}", str(hub.model)) for a in args)],
        capture_output=True,
        text=True,
        env=hub.env,
        cwd=cwd,
        timeout=120,
    )


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


#: Run through a fresh interpreter, as a user starts the CLI: one command line per class
#: of bad value. The rest go through the same entry function in this process, which is
#: what the interpreter runs too, without its second of start-up per command line.
THROUGH_THE_ENTRY_POINT = frozenset(
    {
        "fl simulate --sites 0",
        "model show nope",
        "hub serve --log-level loud --port 0",
        "model push /nonexistent/model.onnx -n m",
    }
)


def _run_in_process(
    hub: Hub,
    args: list[str],
    cwd: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Ran:
    """``modelfleet.cli.main.main()`` with this command line, the hub's environment and
    ``cwd``: its exit code and what it wrote."""
    from modelfleet.cli.main import main

    for name, value in hub.env.items():
        if name.startswith("MODELFLEET_") or name == "COLUMNS":
            monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)
    argv = ["modelfleet", *(a.replace("{model}", str(hub.model)) for a in args)]
    monkeypatch.setattr(sys, "argv", argv)
    capsys.readouterr()
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return Ran(code, out, err)


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    NUMBER_OUT_OF_RANGE + UNKNOWN_NAME + MALFORMED + MISSING_FILE,
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_a_bad_value_is_one_line(
    hub: Hub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    fragment: str,
) -> None:
    if " ".join(args) in THROUGH_THE_ENTRY_POINT:
        result: subprocess.CompletedProcess[str] | Ran = _run(hub, args, tmp_path)
    else:
        result = _run_in_process(hub, args, tmp_path, monkeypatch, capsys)
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output
    assert "errors.pydantic.dev" not in output
    assert result.stdout == "", output  # nothing half-done was printed
    if code == USAGE:
        # click's frame: "Usage: ...", "Try '... --help' for help.", then one "Error:" line.
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines[0].startswith("Usage: "), output
        assert len(lines) == 3, output
        assert lines[2].startswith("Error: "), output
        message = lines[2]
    else:
        assert result.stderr.count("\n") == 1, output
        assert result.stderr.endswith("\n"), output
        assert result.stderr.startswith("error: "), output
        message = result.stderr
    assert fragment in message, output


def test_an_install_hint_keeps_its_brackets(tmp_path: Path) -> None:
    """Item 10 end to end: with psycopg unimportable (a module of that name that fails to
    import, first on the path), `hub init --db postgresql://...` says which extra to
    install, with the `[postgres]` that rich markup used to eat."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "psycopg.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    result = subprocess.run(
        [sys.executable, "-m", "modelfleet", "hub", "init", "--data-dir", str(tmp_path / "hub"),
         "--db", "postgresql://postgres@127.0.0.1:5432/none"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == REFUSED, result.stderr
    assert result.stderr == (
        "error: PostgreSQL support needs psycopg 3: pip install 'modelfleet[postgres]'\n"
    )


def test_user_text_with_brackets_prints_as_written(hub: Hub, tmp_path: Path) -> None:
    """A description is the user's text, not markup: `[gpu]` survives `model show` (it was
    read as a style tag and dropped); the refusal of a bracketed label value quotes it whole."""
    spec = ModelSpec(family="softmax", features=4, classes=2)
    model = tmp_path / "m.onnx"
    onnx.save(build_onnx(spec, init_weights(spec)), str(model))
    pushed = _run(
        hub,
        ["model", "push", str(model), "-n", "described", "--description", "on [gpu] nodes"],
        tmp_path,
    )
    assert pushed.returncode == 0, pushed.stderr
    shown = _run(hub, ["model", "show", "described:1"], tmp_path)
    assert "description  on [gpu] nodes" in shown.stdout, shown.stdout
    refused = _run(hub, ["site", "add", "plant-z", "-l", "tier=[edge]"], tmp_path)
    assert refused.returncode == REFUSED
    assert "'[edge]'" in refused.stderr, refused.stderr
