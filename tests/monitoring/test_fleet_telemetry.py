"""Real hub and site processes: exact totals across outages, drops, no raw values, drift."""

from __future__ import annotations

import base64
import json
import re
import struct
import time

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from modelfleet.cli.main import app
from tests.monitoring.conftest import Fleet, send_requests, serving, spooled, wait_for

SENTINEL = np.float32(1234.5678)  # used only in the inputs, never a real feature value


def _sentinel_forms() -> list[bytes]:
    value = float(SENTINEL)  # what the site actually receives (float32 precision)
    return [
        repr(value).encode(),
        f"{value:.4f}".encode(),
        b"1234.5678",
        struct.pack("<d", value),
        struct.pack("<f", value),
        struct.pack(">d", value),
        struct.pack(">f", value),
    ]


def _decoded_base64(data: bytes) -> list[bytes]:
    out = []
    for token in re.findall(rb"[A-Za-z0-9+/]{16,}={0,2}", data):
        padded = token + b"=" * (-len(token) % 4)
        try:
            out.append(base64.b64decode(padded))
        except ValueError:
            continue
    return out


# Plain HTTP: the test reads every byte the site sends to check that no raw input value is
# among them; over TLS the proxy would see only ciphertext and the check would prove nothing.
@pytest.mark.plain_http
def test_outage_exact_totals_and_no_raw_values(fleet: Fleet, tiny_onnx) -> None:
    """The link to the hub is cut while the site serves (0.2 s windows stand for 10 s
    ones: ~15 of them close during the outage); afterwards the hub's total equals exactly
    what the client sent, and no byte the site ever sent holds the sentinel input."""
    fleet.admin.push(tiny_onnx(offset=1.0), "pump")
    proxy = fleet.proxy()
    site = fleet.add_site("plant-eu", via=proxy)
    fleet.admin.assign("plant-eu", "pump:1")
    wait_for(lambda: serving(site, "pump", fleet.infer), what="pump served")

    rng = np.random.default_rng(7)

    def batches(n: int) -> list[np.ndarray]:
        out = []
        for _ in range(n):
            x = rng.normal(size=(int(rng.integers(1, 5)), 4)).astype(np.float32)
            x[0, 1] = SENTINEL
            out.append(x)
        return out

    sent = send_requests(site.url, "pump", batches(40), fleet.infer)
    wait_for(lambda: fleet.site_total("plant-eu") == sent, what="first windows at the hub")

    proxy.cut()
    # Traffic goes on through the outage until several windows wait in the outbox (counted
    # in the site's spool, not assumed from how long the loop ran).
    deadline = time.monotonic() + 120
    while spooled(site)[0] < 5:
        assert time.monotonic() < deadline, f"outbox never held 5 windows: {spooled(site)}"
        sent += send_requests(site.url, "pump", batches(10), fleet.infer)
        time.sleep(0.05)
    assert fleet.site_total("plant-eu") < sent
    proxy.restore()

    wait_for(lambda: fleet.site_total("plant-eu") == sent, timeout=60, what="backlog shipped")
    # The outbox ships oldest first: once traffic sent after the backlog is counted too, a
    # duplicate of a backlog window would have been counted before it.
    sent += send_requests(site.url, "pump", batches(5), fleet.infer)
    wait_for(lambda: fleet.site_total("plant-eu") >= sent, timeout=60, what="later traffic")
    assert fleet.site_total("plant-eu") == sent
    status = fleet.admin.get_telemetry_status()
    row = next(r for r in status["sites"] if r["site"] == "plant-eu")
    assert row["dropped"] == {"windows": 0, "requests": 0}
    assert row["models"][0]["errors_total"] == 0
    assert row["models"][0]["p99_s"] is not None
    print(f"requests sent {sent}, counted by the hub {row['requests_total']}")

    captured = bytes(proxy.sent)
    assert b"/api/v1/sites/plant-eu/telemetry" in captured
    decoded = _decoded_base64(captured)
    for form in _sentinel_forms():
        assert form not in captured, form
        assert not any(form in blob for blob in decoded), form

    metrics = httpx.get(f"{fleet.hub.url}/metrics", headers=fleet.admin_headers).text
    assert f'modelfleet_site_requests{{model="pump",site="plant-eu",version="1"}} {sent}.0' in (
        metrics
    )


def test_full_outbox_drops_oldest_and_hub_shows_it(fleet: Fleet, tiny_onnx) -> None:
    fleet.admin.push(tiny_onnx(offset=1.0), "pump")
    site = fleet.add_site("plant-us", MODELFLEET_SITE_SPOOL_MAX_BYTES="20000")
    fleet.admin.assign("plant-us", "pump:1")
    wait_for(lambda: serving(site, "pump", fleet.infer), what="pump served")

    fleet.hub.stop()
    x = np.ones((2, 4), np.float32)
    sent = 0
    # Traffic while the hub is away until the 20 kB outbox has dropped windows (read from
    # the site's spool), then a few more windows' worth.
    deadline = time.monotonic() + 120
    while spooled(site)[1] < 3:
        assert time.monotonic() < deadline, f"the outbox never overflowed: {spooled(site)}"
        sent += send_requests(site.url, "pump", [x] * 5, fleet.infer)
        time.sleep(0.05)
    fleet.hub.start()

    def settled() -> bool:
        row = next(
            (r for r in fleet.admin.get_telemetry_status()["sites"] if r["site"] == "plant-us"),
            None,
        )
        return row is not None and row["requests_total"] + row["dropped"]["requests"] == sent

    wait_for(settled, timeout=60, what="counted + dropped == sent")
    row = next(r for r in fleet.admin.get_telemetry_status()["sites"] if r["site"] == "plant-us")
    assert row["dropped"]["windows"] > 0
    assert 0 < row["requests_total"] < sent
    print(f"sent {sent}: counted {row['requests_total']}, dropped {row['dropped']}")

    runner = CliRunner()
    env = {"MODELFLEET_HUB_URL": fleet.hub.url, "MODELFLEET_TOKEN": fleet.admin.token or ""}
    result = runner.invoke(app, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    shown = next(r for r in json.loads(result.output)["sites"] if r["site"] == "plant-us")
    assert shown["dropped"] == row["dropped"]
    table = runner.invoke(app, ["status"], env={**env, "COLUMNS": "250"})
    assert table.exit_code == 0, table.output
    assert "DROPPED" in table.output


def test_drift_flags_the_shifted_feature_only(fleet: Fleet, tiny_onnx, tmp_path) -> None:
    rng = np.random.default_rng(11)
    train = rng.normal(loc=[0, 5, 10, -3], scale=[1, 2, 0.5, 3], size=(5000, 4))
    csv = tmp_path / "train.csv"
    header = "temp,pressure,flow,vibration"
    np.savetxt(csv, train, delimiter=",", header=header, comments="", fmt="%.6f")
    model = tiny_onnx(offset=1.0)
    runner = CliRunner()
    env = {"MODELFLEET_HUB_URL": fleet.hub.url, "MODELFLEET_TOKEN": fleet.admin.token or ""}
    pushed = runner.invoke(
        app, ["model", "push", str(model), "--name", "pump", "--reference-data", str(csv)], env=env
    )
    assert pushed.exit_code == 0, pushed.output
    assert "reference profile: 4 feature sketches" in pushed.output

    fine = fleet.add_site("plant-fine")
    shifted = fleet.add_site("plant-shifted")
    for name, site in (("plant-fine", fine), ("plant-shifted", shifted)):
        fleet.admin.assign(name, "pump:1")
        wait_for(lambda site=site: serving(site, "pump", fleet.infer), what=f"{name} serving")

    def traffic(shift: float) -> list[np.ndarray]:
        data = rng.normal(loc=[0, 5, 10, -3], scale=[1, 2, 0.5, 3], size=(3000, 4))
        data[:, 2] += shift * 0.5  # one standard deviation of "flow"
        return list(data.astype(np.float32).reshape(150, 20, 4))

    sent_fine = send_requests(fine.url, "pump", traffic(0.0), fleet.infer)
    sent_shifted = send_requests(shifted.url, "pump", traffic(1.0), fleet.infer)
    wait_for(
        lambda: (
            fleet.site_total("plant-fine") == sent_fine
            and fleet.site_total("plant-shifted") == sent_shifted
        ),
        what="traffic counted",
    )

    report = fleet.admin.get_drift("pump", version=1)
    by_site = {r["site"]: r for r in report["results"]}
    assert by_site["plant-fine"]["drift"] is False, by_site["plant-fine"]
    assert by_site["plant-shifted"]["drift"] is True
    assert by_site["plant-shifted"]["drifted"] == ["X[2]"]
    flow = next(f for f in by_site["plant-shifted"]["features"] if f["feature"] == "X[2]")
    assert flow["label"] == "flow"
    assert flow["psi"] > 0.5
    assert flow["ks"] > 0.3
    for feature in by_site["plant-fine"]["features"]:
        print(feature["feature"], feature["psi"], feature["ks"], feature["ks_pvalue"])

    wide = {**env, "COLUMNS": "200"}
    shown = runner.invoke(app, ["drift", "pump:1", "--site", "plant-shifted"], env=wide)
    assert shown.exit_code == 0, shown.output
    assert "DRIFT" in shown.output
    assert "X[2] (flow)" in shown.output
    status = fleet.admin.get_telemetry_status()
    flags = {r["site"]: r["drift"] for r in status["sites"]}
    assert flags == {"plant-fine": [], "plant-shifted": ["pump:1/X[2]"]}
