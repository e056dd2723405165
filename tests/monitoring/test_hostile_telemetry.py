"""Telemetry from a hostile or broken site: sketch memory bombs answer 400 with the hub's
memory bounded, and the site sets a refused window aside instead of resending it forever.

Against a real hub process; its peak RSS is read from ``/proc`` (reset before each
attempt through ``clear_refs``).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import struct
import subprocess
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from datasketches import frequent_strings_sketch, kll_doubles_sketch

from modelfleet.monitoring.profiles import profile_array
from modelfleet.pki.tls import TlsFiles
from modelfleet.site.spool import HubTelemetrySender, Shipper, Spool
from modelfleet.transport.session import HubSession
from tests.monitoring.conftest import Fleet

MIB = 1024 * 1024
#: The issue's target: no flood grows the hub more than this above idle.
MAX_GROWTH = 64 * MIB


def _peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


def _reset_peak(pid: int) -> int:
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _peak_rss(pid)


def _frequent(lg_max: int, lg_cur: int) -> str:
    sketch = frequent_strings_sketch(7)
    sketch.update("pump-a", 9)
    raw = bytearray(sketch.serialize())
    raw[3], raw[4] = lg_max, lg_cur
    return base64.b64encode(bytes(raw)).decode()


def _kll(truncate: int | None = None, k: int | None = None) -> str:
    sketch = kll_doubles_sketch(200)
    for value in range(10_000):
        sketch.update(float(value))
    raw = bytearray(sketch.serialize())
    if k is not None:
        raw[4:6] = struct.pack("<H", k)
    data = bytes(raw[:truncate] if truncate else raw)
    return base64.b64encode(data).decode()


def _window(**columns: dict) -> dict:
    return {
        "id": uuid.uuid4().hex, "model": "pump", "version": 1, "start": 1.7e9,
        "end": 1.7e9 + 10, "requests": 3, "latency": {"4": 3}, "inputs": columns,
        "outputs": {},
    }  # fmt: skip


def _site(fleet: Fleet, name: str) -> HubSession:
    created = fleet.admin.add_site(name, {"region": "eu-west"})
    tls = TlsFiles(ca_file=fleet.hub.ca_file) if fleet.hub.url.startswith("https") else None
    with HubSession(fleet.hub.url, tls=tls) as anonymous:
        enrolled = anonymous.request(
            "POST", "/api/v1/enroll", json={"token": created["enrollment_token"]}
        ).json()
    return HubSession(fleet.hub.url, enrolled["token"], tls=tls)


BOMBS = {
    # The reproduction: 16 columns whose frequent-items maps claim 2^25 slots each.
    "16 columns of 2^25-slot maps": {
        f"c{i}": {"kind": "categorical", "count": 9, "items": _frequent(25, 25)} for i in range(16)
    },
    "a 2^30-slot map": {"c": {"kind": "categorical", "count": 9, "items": _frequent(30, 3)}},
    "a current size above the maximum": {
        "c": {"kind": "categorical", "count": 9, "items": _frequent(7, 9)}
    },
    "a truncated KLL sketch": {"x": {"kind": "numeric", "count": 9, "kll": _kll(truncate=40)}},
    "a KLL sketch claiming k=65535": {"x": {"kind": "numeric", "count": 9, "kll": _kll(k=65535)}},
    "1000 columns": {
        f"x{i}": {"kind": "numeric", "count": 1, "kll": _kll(truncate=None)} for i in range(1000)
    },
}


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_sketch_bombs_answer_400_and_the_hub_stays_small(fleet: Fleet, bomb: str) -> None:
    site = _site(fleet, "plant-eu")
    pid = fleet.hub.proc.pid  # type: ignore[union-attr]
    body = {
        "batch_id": uuid.uuid4().hex,
        "spool_id": "s1",
        "windows": [_window(**BOMBS[bomb])],
    }
    idle = _reset_peak(pid)
    try:
        site.request("POST", "/api/v1/sites/plant-eu/telemetry", json=body)
    except Exception as exc:
        status = getattr(exc, "status", None)
        message = getattr(exc, "message", str(exc))
    else:
        pytest.fail(f"{bomb}: accepted")
    growth = _peak_rss(pid) - idle
    print(f"{bomb}: {status} {message[:100]!r}; hub peak RSS +{growth / MIB:.1f} MiB")
    assert status == 400, message
    assert growth < MAX_GROWTH, f"{bomb}: hub grew {growth / MIB:.0f} MiB"
    # Alive, and still taking good telemetry.
    good = {"batch_id": uuid.uuid4().hex, "spool_id": "s1", "windows": [_window()]}
    assert site.request("POST", "/api/v1/sites/plant-eu/telemetry", json=good).status_code == 200
    site.close()


def test_a_refused_window_is_set_aside_and_the_rest_delivered(fleet: Fleet, tmp_path: Path) -> None:
    """Two good windows and one the hub refuses, in one batch: the batch is split, the good
    ones are stored, the bad one lands in the dead letters (counted as dropped, shown by
    the hub's status) and the outbox is empty: nothing is resent forever."""
    session = _site(fleet, "plant-eu")
    spool = Spool(tmp_path / "telemetry.db")
    profile = profile_array(np.random.default_rng(0).normal(size=(50, 2))).to_dict()
    good = [_window(**profile["columns"]) for _ in range(2)]
    bad = _window(c={"kind": "categorical", "count": 9, "items": _frequent(30, 30)})
    for window in (good[0], bad, good[1]):
        spool.put(window)
    shipper = Shipper(spool, HubTelemetrySender(session, "plant-eu"))
    shipped = shipper.ship_once()
    assert shipped == 2
    assert spool.stats().windows == 0
    assert spool.stats().dead_letters == 1
    [(window_id, reason)] = spool.dead_letters()
    assert window_id == bad["id"]
    assert "frequent-items map size 2^30" in reason
    assert spool.drops() == (1, 3)
    assert shipper.ship_once() == 0  # nothing left, nothing resent
    status = fleet.admin.get_telemetry_status()
    [row] = [s for s in status["sites"] if s["site"] == "plant-eu"]
    assert row["requests_total"] == 6
    assert row["dropped"] == {"windows": 1, "requests": 3}
    spool.close()
    session.close()


def test_every_count_in_a_window_is_bounded(fleet: Fleet) -> None:
    site = _site(fleet, "plant-eu")
    url = "/api/v1/sites/plant-eu/telemetry"
    for bad in ({"version": 2**80}, {"requests": 2**70}, {"latency": {"4": 2**64}}):
        body = {"batch_id": uuid.uuid4().hex, "spool_id": "s1", "windows": [_window() | bad]}
        response = httpx.post(
            f"{fleet.hub.url}{url}",
            json=body,
            headers={"Authorization": f"Bearer {site.token}"},
            verify=str(fleet.hub.ca_file) if fleet.hub.url.startswith("https") else False,
        )
        assert response.status_code == 400, (bad, response.text)
    site.close()


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs: a real full disk (ENOSPC), not a monkeypatch."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_counts_windows_as_dropped_and_the_hub_hears_of_it(
    fleet: Fleet, small_disk: Path
) -> None:
    session = _site(fleet, "plant-eu")
    spool = Spool(small_disk / "telemetry.db")
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # unbuffered: take every free byte
    with contextlib.suppress(OSError):
        while True:
            os.write(fd, b"\0" * 4096)
    os.close(fd)
    profile = profile_array(np.random.default_rng(0).normal(size=(200, 8))).to_dict()
    lost = sum(spool.put(_window(**profile["columns"])) for _ in range(20))
    assert lost >= 1  # the disk was full: windows were counted, nothing raised
    assert spool.drops()[0] >= lost
    shipper = Shipper(spool, HubTelemetrySender(session, "plant-eu"))
    shipper.ship_once()
    [row] = [s for s in fleet.admin.get_telemetry_status()["sites"] if s["site"] == "plant-eu"]
    assert row["dropped"]["windows"] == spool.drops()[0]
    # Space comes back: the next window is kept and the lost count becomes durable.
    filler.unlink()
    assert spool.put(_window()) == 0
    spool.close()
    again = Spool(small_disk / "telemetry.db")
    assert again.drops()[0] >= lost
    again.close()
    session.close()
