"""``GET /api/v1/telemetry/series``: a model's figures over time per site, bounded and
validated, readable by a viewer; and the rollout page's live stream ends when the hub stops.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub.dashboard.pages.rollouts import MAX_STREAMS
from modelfleet.hub_client import HubClient
from modelfleet.monitoring.histograms import latency_bucket
from modelfleet.sim.launcher import HubProcess, SiteProcess
from tests.conftest import InProcessHub, trust_fleet_ca
from tests.waiting import wait_for

SERIES = "/api/v1/telemetry/series"


def window(wid: str, requests: int, errors: int, latency_s: float, ago_s: float) -> dict[str, Any]:
    end = datetime.now(UTC) - timedelta(seconds=ago_s)
    return {
        "id": wid,
        "model": "pump",
        "version": 1,
        "start": (end - timedelta(seconds=1)).timestamp(),
        "end": end.timestamp(),
        "requests": requests,
        "errors": errors,
        "rows": requests,
        "latency": {str(latency_bucket(latency_s)): requests},
    }


def hub_with_traffic(hub_factory: Callable[..., InProcessHub], tiny_onnx: Any) -> InProcessHub:
    hub = hub_factory()
    pushed = hub.client.post(
        "/api/v1/models/pump/versions",
        content=Path(tiny_onnx()).read_bytes(),
        headers={**hub.headers(), "Content-Type": "application/octet-stream"},
    )
    assert pushed.status_code == 201, pushed.text
    for name in ("north", "south"):
        added = hub.client.post(
            "/api/v1/sites", json={"name": name, "labels": {}}, headers=hub.headers()
        )
        assert added.status_code == 201, added.text
    # What a site's POST /sites/{name}/telemetry hands the telemetry service.
    hub.ctx.telemetry.ingest(
        "north",
        "b1",
        "spool",
        (0, 0),
        [window("n1", 100, 2, 0.010, 600), window("n2", 50, 0, 0.010, 30)],
    )
    hub.ctx.telemetry.ingest("south", "b1", "spool", (0, 0), [window("s1", 40, 4, 0.200, 120)])
    return hub


def test_series_per_site_sums_the_windows_and_reads_percentiles_from_them(
    hub_factory: Callable[..., InProcessHub], tiny_onnx: Any
) -> None:
    hub = hub_with_traffic(hub_factory, tiny_onnx)
    viewer = hub.token("viewer")

    answer = hub.client.get(SERIES, params={"model": "pump"}, headers=hub.headers(viewer))

    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["range"] == "1h"
    assert doc["bucket_s"] == 60
    assert doc["note"] == ""
    by_site = {s["site"]: s for s in doc["series"]}
    assert sorted(by_site) == ["north", "south"]
    north, south = by_site["north"], by_site["south"]
    assert (north["requests"], north["errors"]) == (150, 2)
    assert sum(b["requests"] for b in north["buckets"]) == 150
    assert len(north["buckets"]) <= 61
    assert len(north["buckets"]) == len(south["buckets"])
    busy = [b for b in south["buckets"] if b["requests"]]
    assert len(busy) == 1
    assert busy[0]["error_rate"] == 0.1
    # p99 from the histogram: within one bucket (<= 19 %) of the 200 ms every request took.
    assert 0.2 / 1.2 < busy[0]["p99_s"] < 0.2 * 1.2
    assert all(b["error_rate"] is None and b["p99_s"] is None for b in south["buckets"][:5])


def test_series_filters_by_site_and_splits_versions_and_covers_24h_and_7d(
    hub_factory: Callable[..., InProcessHub], tiny_onnx: Any
) -> None:
    hub = hub_with_traffic(hub_factory, tiny_onnx)
    one = hub.client.get(
        SERIES, params={"model": "pump", "site": "south", "by": "site_version"},
        headers=hub.headers(),
    ).json()  # fmt: skip
    assert [(s["site"], s["version"]) for s in one["series"]] == [("south", 1)]
    for name, width in (("24h", 900), ("7d", 7200)):
        doc = hub.client.get(
            SERIES, params={"model": "pump", "range": name}, headers=hub.headers()
        ).json()
        assert doc["bucket_s"] == width
        assert len(doc["series"][0]["buckets"]) <= 120
        assert sum(s["requests"] for s in doc["series"]) == 190


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"model": "pump", "range": "2h"}, 400),
        ({"model": "pump", "range": ""}, 400),
        ({"model": "pump", "version": 0}, 400),
        ({"model": "pump", "by": "region"}, 400),
        ({}, 400),
        ({"model": "x" * 300}, 400),
        ({"model": "nope"}, 404),
    ],
)
def test_series_refuses_bad_input_clearly(
    hub_factory: Callable[..., InProcessHub], tiny_onnx: Any, params: dict[str, Any], status: int
) -> None:
    hub = hub_with_traffic(hub_factory, tiny_onnx)
    answer = hub.client.get(SERIES, params=params, headers=hub.headers())
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["message"]


def test_series_needs_a_token(hub_factory: Callable[..., InProcessHub]) -> None:
    hub = hub_factory()
    assert hub.client.get(SERIES, params={"model": "pump"}).status_code == 401


class Reader(threading.Thread):
    """One browser's event stream, read line by line until the server ends it."""

    def __init__(
        self, base: str, cookies: dict[str, str], path: str, *, leave: bool = False
    ) -> None:
        super().__init__(daemon=True)
        self.base, self.cookies, self.path = base, cookies, path
        self.leave = leave  # hang up after the first event, as a closed browser tab
        self.lines: list[str] = []
        self.status = 0
        self.ended = threading.Event()

    def run(self) -> None:
        try:
            with (
                httpx.Client(base_url=self.base, cookies=self.cookies, timeout=30) as http,
                http.stream("GET", self.path) as stream,
            ):
                self.status = stream.status_code
                if stream.headers["content-type"].startswith("text/event-stream"):
                    for line in stream.iter_lines():  # one by one: the test reads them
                        self.lines.append(line)
                        if self.leave and line == "":
                            break
        finally:
            self.ended.set()


def test_the_rollout_streams_are_bounded_and_end_when_the_hub_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_onnx: Any
) -> None:
    init = init_hub(tmp_path / "hub")
    log = tmp_path / "hub.log"
    hub = HubProcess(tmp_path / "hub", log_path=log).start()
    trust_fleet_ca(monkeypatch, hub.ca_file)
    admin = HubClient(hub.url, init.admin_token)
    site: SiteProcess | None = None
    try:
        admin.push(Path(tiny_onnx()), "pump", training_regions=["global"])
        token = admin.add_site("plant", {"region": "eu-west"})["enrollment_token"]
        site = SiteProcess(tmp_path / "plant", hub.url, token).start(timeout=60)
        wait_for(lambda: all(s["online"] for s in admin.list_sites()), what="the site online")
        # A bake of ten minutes: the rollout stays running while the test watches.
        rollout = admin.deploy({"ref": "pump:1", "selector": "", "strategy": {"bake_s": 600}})
        rid = rollout["rollout"]["id"]
        with httpx.Client(base_url=hub.url, timeout=30, follow_redirects=False) as http:
            signed = http.post(
                "/ui/login",
                data={"token": init.admin_token, "next": "/ui/rollouts"},
                headers={"Origin": hub.url},
            )
            assert signed.status_code == 303, signed.text
            url = f"/ui/rollouts/{rid}/stream"
            streams = [Reader(hub.url, dict(http.cookies), url) for _ in range(MAX_STREAMS)]
            for reader in streams:
                reader.start()
            # The first event comes at once: the server streams, it does not buffer.
            wait_for(lambda: all("event: rollout" in r.lines for r in streams), what="first events")
            assert any(rid in line for line in streams[0].lines)
            assert all(r.status == 200 for r in streams)
            # One stream more than a hub holds: refused clearly, not queued.
            refused = http.get(url)
            assert refused.status_code == 503
            assert "too many live rollout streams" in refused.text
            # A client that hangs up gives its place back.
            leaver = streams.pop()
            leaver.leave = True  # read at its next line: it has had its first event

            def another() -> bool:
                reader = Reader(hub.url, dict(http.cookies), url)
                reader.start()
                wait_for(lambda: reader.status != 0 or reader.ended.is_set(), what="an answer")
                if reader.status == 200:
                    streams.append(reader)
                return reader.status == 200

            wait_for(another, what="a place freed by the client that left")
            proc = hub.proc
            assert proc is not None
            proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            status = proc.wait(30)
            print(f"hub stopped {time.monotonic() - started:.2f}s after SIGTERM")  # a figure
            assert status == 0, log.read_text()
            wait_for(lambda: all(r.ended.is_set() for r in streams), what="the streams' end")
            output = log.read_text()
            assert "Cancel" not in output, output
            assert "Traceback" not in output, output
    finally:
        if site is not None:
            site.stop()
        admin.close()
        hub.stop()


def test_the_builtin_engine_streams_each_chunk_as_the_app_sends_it() -> None:
    """The builtin HTTP/1.1 engine (transport/http11.py) writes every body message at once
    (chunked): an event stream's first event reaches the client while the app still waits
    to send the second (here: until the client has read the first), and a client that
    leaves is seen as ``http.disconnect``."""
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    from modelfleet.transport import server as builtin

    async def scenario() -> None:
        read_first = asyncio.Event()
        left = asyncio.Event()
        app = FastAPI()

        @app.get("/events")
        async def events() -> StreamingResponse:
            async def body() -> AsyncIterator[str]:
                try:
                    yield "event: one\ndata: 1\n\n"
                    await asyncio.wait_for(read_first.wait(), 30)
                    yield "event: two\ndata: 2\n\n"
                    await asyncio.sleep(3600)  # until the client leaves
                finally:
                    left.set()

            return StreamingResponse(body(), media_type="text/event-stream")

        server = await builtin.start_builtin(app, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with (
            httpx.AsyncClient(timeout=30) as http,
            http.stream("GET", f"http://127.0.0.1:{port}/events") as stream,
        ):
            lines = stream.aiter_lines()
            assert await anext(lines) == "event: one"
            read_first.set()
            while await anext(lines) != "event: two":
                pass  # skip the event's data and blank lines until the second event
        await asyncio.wait_for(left.wait(), 30)  # the app saw the client leave
        server.close()

    asyncio.run(scenario())


def test_drift_over_time_grows_with_the_shifted_sketches(
    hub_factory: Callable[..., InProcessHub], tiny_onnx: Any
) -> None:
    """The rollout page's drift chart: the worst input PSI of the sketches merged since the
    start, per bucket; small while the inputs match the reference, large once they shift."""
    import numpy as np

    from modelfleet.monitoring.profiles import DatasetProfile

    hub = hub_with_traffic(hub_factory, tiny_onnx)
    rng = np.random.default_rng(7)

    def sketch(mean: float) -> DatasetProfile:
        profile = DatasetProfile()
        profile.update_column("temperature", rng.normal(mean, 1.0, 2000))
        return profile

    def shifted_window(wid: str, mean: float, ago_s: float) -> dict[str, Any]:
        return {**window(wid, 2000, 0, 0.01, ago_s), "inputs": sketch(mean).to_dict()["columns"]}

    hub.ctx.telemetry.ingest(
        "north",
        "b2",
        "spool",
        (0, 0),
        [shifted_window("d1", 0.0, 50), shifted_window("d2", 0.0, 40)]
        + [shifted_window(f"d{i}", 4.0, 30 - i) for i in range(3, 8)],
    )
    now = datetime.now(UTC)
    found = hub.ctx.timeseries.drift_between(
        "pump",
        1,
        ["north"],
        now - timedelta(seconds=60),
        now,
        sketch(0.0),
        hub.ctx.telemetry.thresholds("pump"),
    )
    assert len(found.values) == len(found.starts) <= 120
    measured = [v for v in found.values if v is not None]
    assert measured[0] < 0.1  # the same distribution as the reference
    assert measured[-1] > 1.0  # most samples shifted by four standard deviations
