"""``rollout status --watch``, ``deploy`` and ``apply`` as a script or an operator runs them:
the real CLI in a subprocess against the package's fleet of real processes (``conftest.py``).

Not on a terminal the watch prints plain lines (one per change, no ANSI codes) and its exit
code says how the rollout ended; on a terminal (a pseudo-terminal 100 columns wide) it draws
a live view that fits. A re-deploy without strategy flags says "strategy kept", ``--plan``
exits 1 when the deployment would be refused, an empty selector says so, and after an
abort ``apply --dry-run`` shows that the sites do not run the file's version.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import re
import select
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from tests.deploy.fleet import CANARY, Fleet, baseline, deploy, settle, traffic, wait_for

ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|\][^\x07]*\x07|[()][A-Z0-9])")
STAMP = re.compile(r"^\d\d:\d\d:\d\d ")


def cli_env(fleet: Fleet) -> dict[str, str]:
    env = {**os.environ, "MODELFLEET_HUB_URL": fleet.hub.url, "MODELFLEET_TOKEN": fleet.token}
    env.pop("COLUMNS", None)
    return env


def run(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelfleet", *args],
        capture_output=True,
        text=True,
        env=cli_env(fleet),
        timeout=180,
    )


@contextmanager
def watch(fleet: Fleet, rollout_id: str) -> Iterator[subprocess.Popen[str]]:
    """``rollout status ID --watch`` running (not on a terminal), killed if still running
    when the block ends (a failed assertion)."""
    args = ["rollout", "status", rollout_id, "--watch", "--interval", "0.2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelfleet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(fleet),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def check_plain(out: str) -> list[str]:
    """The watch's lines without their time stamps; no ANSI code, no line repeated."""
    assert "\x1b" not in out
    lines = [STAMP.sub("", line) for line in out.splitlines()]
    assert all(STAMP.match(line) for line in out.splitlines())
    changes = [line.split("; bake")[0].split("; paused")[0] for line in lines]
    assert all(a != b for a, b in itertools.pairwise(changes)), lines
    return lines


def test_watch_in_a_script_prints_progress_and_exits_0_on_success(fleet: Fleet) -> None:
    baseline(fleet, "watched")
    fleet.admin.push(fleet.model(offset=5.0), "watched", training_regions=["global"])
    result = deploy(
        fleet,
        "watched:2",
        strategy={**CANARY, "bake_s": 1, "progress_deadline_s": 120},
        gates={"max_error_rate": 0.05, "max_p99_ms": 5000, "min_requests": 5},
    )
    rid = result["rollout"]["id"]
    with watch(fleet, rid) as watched:
        assert watched.stdout is not None
        # No traffic yet, so wave 1 cannot pass before the watch has shown it waiting.
        first = watched.stdout.readline()
        with traffic(fleet, "watched"):
            rest, err = watched.communicate(timeout=180)
    out = first + rest
    print(out)
    assert watched.returncode == 0, (out, err)
    lines = check_plain(out)
    progress = [line for line in lines if "running, wave 1/3:" in line]
    assert progress, lines
    assert "requests 0/5" in progress[0]
    assert "error rate" in progress[0]
    assert "<= 5.00%" in progress[0]
    assert "p99" in progress[0]
    assert "<= 5000.0 ms" in progress[0]
    assert [line.split(" success")[0] for line in lines if " success: " in line] == [
        f"rollout {rid} wave {i} ({site})"
        for i, site in ((1, "site-a"), (2, "site-b"), (3, "site-c"))
    ]
    assert lines[-1].startswith(f"rollout {rid} watched 1 -> 2: succeeded, wave 3/3")
    assert run(fleet, "rollout", "status", rid).returncode == 0


def test_watch_rides_through_a_hub_restart(fleet: Fleet) -> None:
    """A pipeline waiting on a rollout must not fail because the hub restarted under it:
    the watch says once that the hub is unreachable, keeps asking, says when it is back,
    and still ends by how the rollout ended."""
    baseline(fleet, "ride")
    fleet.admin.push(fleet.model(offset=8.0), "ride", training_regions=["global"])
    result = deploy(
        fleet,
        "ride:2",
        strategy={**CANARY, "bake_s": 1, "progress_deadline_s": 300},
        gates={"max_error_rate": 0.05, "min_requests": 5},
    )
    rid = result["rollout"]["id"]
    with watch(fleet, rid) as watched:
        assert watched.stdout is not None
        assert watched.stderr is not None
        first = watched.stdout.readline()  # watching; wave 1 waits for traffic
        fleet.hub.kill()
        noticed = watched.stderr.readline()  # the watch has seen the hub gone
        fleet.restart_hub()
        with traffic(fleet, "ride"):
            rest, err = watched.communicate(timeout=180)
    print(first + rest, noticed + err)
    assert watched.returncode == 0, (first + rest, noticed + err)
    assert noticed.startswith("warning:"), noticed
    assert "still watching" in noticed
    assert err.count("hub reachable again") == 1, err
    assert (first + rest).splitlines()[-1].endswith("every wave passed its gates")


def test_watch_exits_4_when_aborted_and_apply_dry_run_shows_the_difference(
    fleet: Fleet, tmp_path: Path
) -> None:
    fleet.admin.push(fleet.model(offset=1.0), "declared", training_regions=["global"])
    fleet.admin.push(fleet.model(offset=2.0), "declared", training_regions=["global"])
    decl = {"model": "declared:1", "strategy": {"bake_s": 0}}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"deployments": [decl]}))
    assert run(fleet, "apply", "-f", str(path)).returncode == 0
    first = fleet.admin.list_rollouts()[0]
    settle(fleet, first["id"], ("succeeded",))
    # Version 2 waits for far more requests than it gets: it bakes until aborted.
    decl.update(model="declared:2", gates={"min_requests": 1_000_000})
    path.write_text(yaml.safe_dump({"deployments": [decl]}))
    applied = run(fleet, "apply", "-f", str(path))
    rid = re.search(r"\(rollout (r-\w+)\)", applied.stdout)
    assert rid, applied.stdout
    with watch(fleet, rid[1]) as watched:
        assert watched.stdout is not None
        first_line = watched.stdout.readline()  # the watch is running: abort now
        assert "running, wave 1/1: requests 0/1000000" in first_line, first_line
        assert run(fleet, "rollout", "abort", rid[1]).returncode == 0
        out, err = watched.communicate(timeout=60)
    assert watched.returncode == 4, (first_line, out, err)
    assert check_plain(first_line + out)[-1].startswith(
        f"rollout {rid[1]} declared 1 -> 2: aborted"
    )
    status = run(fleet, "rollout", "status", rid[1])
    assert status.returncode == 4
    assert "Traceback" not in status.stderr

    dry = run(fleet, "apply", "-f", str(path), "--dry-run")
    print(dry.stdout)
    assert dry.returncode == 0
    text = " ".join(dry.stdout.split())
    assert "~ deployment declared" in text
    assert f"sites run version 1 after rollout {rid[1]} aborted" in text
    assert "no changes" not in text
    run(fleet, "undeploy", "declared")


def test_redeploy_without_strategy_flags_keeps_the_canary(fleet: Fleet) -> None:
    fleet.admin.push(fleet.model(offset=3.0), "kept", training_regions=["global"])
    fleet.admin.push(fleet.model(offset=4.0), "kept", training_regions=["global"])
    first = run(fleet, "deploy", "kept:1", "--canary", "site-a", "--then", "50,100", "--bake", "0")
    assert first.returncode == 0, first.stderr
    assert "strategy: canary site-a then 50%,100% of the rest" in " ".join(first.stdout.split())
    rid = re.search(r"rollout (r-\w+) started", first.stdout)
    assert rid, first.stdout
    settle(fleet, rid[1], ("succeeded",))
    again = run(fleet, "deploy", "kept:2", "--min-requests", "1000000")
    assert again.returncode == 0, again.stderr
    print(again.stdout)
    text = " ".join(again.stdout.split())
    assert "strategy kept: canary site-a then 50%,100% of the rest (bake 0s)" in text
    assert "3 wave(s)" in text
    busy = run(fleet, "deploy", "kept:2", "--plan")
    assert busy.returncode == 1
    print(busy.stdout)
    assert "promote, abort or roll it back first" in " ".join(busy.stdout.split())
    assert "gates kept: min_requests 1000000" in " ".join(busy.stdout.split())
    rid = re.search(r"rollout (r-\w+) started", again.stdout)
    assert rid
    assert run(fleet, "rollout", "abort", rid[1]).returncode == 0
    run(fleet, "undeploy", "kept")


def test_plan_exits_1_when_refused_and_names_an_empty_selector(fleet: Fleet) -> None:
    fleet.admin.push(fleet.model(offset=8.0), "planned", training_regions=["global"])
    ok = run(fleet, "deploy", "planned:1", "--to", "region=eu-west", "--plan")
    assert ok.returncode == 0, ok.stdout
    assert "would be accepted" in ok.stdout
    empty = run(fleet, "deploy", "planned:1", "--to", "region=mars", "--plan")
    assert empty.returncode == 1
    text = " ".join(empty.stdout.split())
    assert "selector 'region=mars' selects no site; labels in use:" in text
    assert "region=ap-south|eu-west|us-east" in text
    assert "would be refused" in text
    refused = run(fleet, "deploy", "planned:1", "--to", "region=mars")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert "selects no site" in refused.stderr


def read_pty(fd: int, proc: subprocess.Popen[bytes]) -> str:
    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # the other end closed
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    return b"".join(chunks).decode(errors="replace")


def test_watch_on_a_terminal_draws_a_view_that_fits_100_columns(fleet: Fleet) -> None:
    baseline(fleet, "viewed")
    fleet.admin.push(fleet.model(offset=6.0), "viewed", training_regions=["global"])
    with traffic(fleet, "viewed"):
        result = deploy(
            fleet,
            "viewed:2",
            strategy={**CANARY, "bake_s": 1, "progress_deadline_s": 60},
            gates={"max_error_rate": 0.05, "min_requests": 5},
        )
        rid = result["rollout"]["id"]
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        env = {**cli_env(fleet), "TERM": "xterm-256color"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelfleet", "rollout", "status", rid, "--watch"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
        )
        os.close(slave)
        screen = read_pty(master, proc)
        os.close(master)
        assert proc.wait(timeout=60) == 0, screen
    wait_for(lambda: fleet.admin.get_rollout(rid)["state"] == "succeeded")
    text = ANSI.sub("", screen)
    rows = [row for line in text.split("\n") for row in line.split("\r")]
    assert max(len(row.rstrip()) for row in rows) <= 100
    assert "\x1b[" in screen  # drawn for a terminal
    assert f"rollout {rid}" in text
    assert "requests" in text
    assert "error rate" in text
    assert "succeeded" in text
