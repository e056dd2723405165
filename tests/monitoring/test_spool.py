"""The outbox and the shipper: caps, drops, vacuum, and a SIGKILL between ack and delete."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from modelfleet.errors import HubUnreachable
from modelfleet.site.hub_link import enroll
from modelfleet.site.spool import Batch, HubTelemetrySender, Shipper, Spool
from modelfleet.site.telemetry import TelemetryRecorder
from modelfleet.transport.session import HubSession
from tests.monitoring.conftest import Fleet


def window(requests: int, pad: int = 0) -> dict:
    return {
        "id": uuid.uuid4().hex,
        "model": "pump",
        "version": 1,
        "start": 1_700_000_000.0,
        "end": 1_700_000_010.0,
        "requests": requests,
        "errors": 0,
        "latency": {"10": requests},
        "inputs": {},
        "outputs": {},
        "note": "x" * pad,
    }


def test_full_outbox_drops_oldest_and_counts_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "t.db", max_bytes=5_000)
    windows = [window(i + 1, pad=900) for i in range(10)]
    for w in windows:
        spool.put(w)
    stats = spool.stats()
    assert stats.bytes <= 5_000
    assert stats.dropped_windows == 10 - stats.windows
    kept = spool.next_batch(max_bytes=10**6)
    assert kept is not None
    # The newest survive, in order; the dropped ones are the oldest.
    assert list(kept.window_ids) == [w["id"] for w in windows[-stats.windows :]]
    assert stats.dropped_requests == sum(w["requests"] for w in windows[: -stats.windows])
    spool.close()


def test_in_flight_batch_is_resent_unchanged_and_space_reclaimed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "t.db")
    for _ in range(200):
        spool.put(window(3, pad=2000))
    first = spool.next_batch(max_bytes=50_000)
    assert first is not None
    again = spool.next_batch(max_bytes=50_000)
    assert again == first  # not acknowledged: same id, same windows
    sent: list[Batch] = []
    failed: list[str] = []

    def flaky(batch: Batch) -> None:
        if len(sent) == 2:
            failed.append(batch.id)
            raise HubUnreachable("link down")
        sent.append(batch)

    shipper = Shipper(spool, flaky, max_batch_bytes=50_000)
    with pytest.raises(HubUnreachable):
        shipper.ship_once()
    assert sent[0].id == first.id
    before = spool.stats().file_bytes
    shipper.send = sent.append
    shipper.ship_once()
    stats = spool.stats()
    assert stats.windows == 0
    assert stats.file_bytes < before / 4  # incremental vacuum gave the pages back
    assert sum(len(b.window_ids) for b in sent) == 200
    assert sent[2].id == failed[0]  # the batch that failed went again under its id
    spool.close()


def test_recorder_windows_hold_counts_histograms_and_sketches(tmp_path: Path) -> None:
    closed: list[dict] = []
    recorder = TelemetryRecorder(closed.append, window_s=60, sample_requests=8)
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    for i in range(50):
        recorder.observe(
            model="pump", version=1, latency_s=0.001 * (i + 1), outcome="ok" if i % 10 else "error",
            batch_size=10, inputs={"X": x}, outputs={"Y": x + 1},
        )  # fmt: skip
    assert recorder.flush() == 1
    (w,) = closed
    assert (w["requests"], w["rows"], w["errors"]) == (50, 500, 5)
    assert w["outcomes"] == {"ok": 45, "error": 5}
    assert sum(w["latency"].values()) == 50
    assert w["batch_sizes"] == {"4": 50}  # 10 rows -> the <=16 bucket
    assert w["sampled_requests"] == 8
    assert sorted(w["inputs"]) == ["X[0]", "X[1]", "X[2]", "X[3]"]
    assert w["inputs"]["X[0]"]["count"] == 80  # 8 sampled requests x 10 rows
    assert sorted(w["outputs"]) == ["Y[0]", "Y[1]", "Y[2]", "Y[3]"]


_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from modelfleet.site.spool import HubTelemetrySender, Shipper, Spool
    from modelfleet.transport.session import HubSession
    spool = Spool(sys.argv[1])
    sender = HubTelemetrySender(HubSession(sys.argv[2], sys.argv[4]), sys.argv[3])
    def crash(batch):
        # The hub has acknowledged this batch; die before the windows are deleted.
        os.kill(os.getpid(), signal.SIGKILL)
    Shipper(spool, sender, max_batch_bytes=3000, before_delete=crash).ship_once()
    """
)


def test_sigkill_between_ack_and_delete_counts_each_window_once(
    fleet: Fleet, tiny_onnx, tmp_path: Path
) -> None:
    fleet.admin.push(tiny_onnx(), "pump")
    created = fleet.admin.add_site("plant-eu", {"region": "eu-west"})
    credential = enroll(fleet.hub.url, created["enrollment_token"])
    db = tmp_path / "spool" / "telemetry.db"
    spool = Spool(db)
    recorder = TelemetryRecorder(spool.put, window_s=3600)
    sent = 0
    for round_ in range(12):
        for _ in range(round_ + 1):
            recorder.observe(
                model="pump", version=1, latency_s=0.002, outcome="ok", batch_size=1,
                inputs=None, outputs=None,
            )  # fmt: skip
            sent += 1
        recorder.flush()  # one window per round
    spool.close()

    killed = subprocess.run(
        [sys.executable, "-c", _KILLER, str(db), fleet.hub.url, "plant-eu", credential.token],
        capture_output=True,
        timeout=60,
    )
    assert killed.returncode == -9, killed.stderr.decode()
    counted_before = fleet.site_total("plant-eu")
    assert 0 < counted_before < sent

    spool = Spool(db)
    in_flight = spool.stats().in_flight
    assert in_flight > 0  # the acknowledged batch is still on disk
    session = HubSession(fleet.hub.url, credential.token)
    try:
        Shipper(spool, HubTelemetrySender(session, "plant-eu"), max_batch_bytes=3000).ship_once()
    finally:
        session.close()
    assert spool.stats().windows == 0
    spool.close()
    assert fleet.site_total("plant-eu") == sent
