"""The cascade against real sites (cloud link cut by the WAN emulator), the gateway as a real
process, and the WAN emulator itself."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable

import httpx
import numpy as np
import pytest

from modelfleet.oip.codec import decode_response, to_numpy_input
from modelfleet.oip.types import InferRequest, InferResponse
from modelfleet.pki.identity import site_identity
from modelfleet.pki.tls import TlsFiles
from modelfleet.sim.wan import WanLink, parse_duration
from modelfleet.site.cascade import Cascade, EscalationRule
from tests.routing.conftest import GeoFleet


def local_answer(fleet: GeoFleet, x: np.ndarray) -> tuple[InferRequest, InferResponse]:
    """What the edge site (eu-a, the small clf) answers, as the server would hold it."""
    body = {
        "id": "edge-1",
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 2], "data": x.ravel().tolist()}],
    }
    response = httpx.post(
        f"{fleet.sites['eu-a'].url}/v2/models/clf/infer", json=body, headers=fleet.auth
    )
    assert response.status_code == 200, response.text
    request = InferRequest(id="edge-1", inputs=[to_numpy_input(x, "X")])
    return request, decode_response(response.content, None)


def probabilities(response: InferResponse) -> np.ndarray:
    return next(o.data for o in response.outputs if o.name == "probabilities")


def test_cascade_escalates_low_confidence_and_degrades_when_the_cloud_is_cut(
    geo_fleet: GeoFleet,
) -> None:
    cloud = geo_fleet.links["eu-b"]  # eu-b serves the confident clf:2
    rules = {"clf": EscalationRule(threshold=0.9)}
    # The reachable cloud must answer within the deadline: give it 60 s, so a busy machine
    # cannot turn its answer into a degraded one. A black-holed cloud never answers, so
    # any deadline shows the fallback; the cut cascade keeps the production default.
    token = geo_fleet.infer_token  # the cloud site requires a credential too
    # Over TLS the cloud is verified against the fleet CA and must be the site named.
    tls = TlsFiles(geo_fleet.hub.ca_file)
    eu_b = site_identity("eu-b")
    cascade = Cascade(
        cloud.url, rules, deadline_s=60.0, data_region="EU", identity=eu_b, tls=tls, token=token
    )
    cut_cascade = Cascade(
        cloud.url, rules, deadline_s=0.5, data_region="EU", identity=eu_b, tls=tls, token=token
    )
    # The same URL, but the config chose eu-a: eu-b's certificate does not name it, so the
    # request is never sent there and the local answer comes back degraded.
    wrong = Cascade(
        cloud.url,
        rules,
        deadline_s=60.0,
        data_region="EU",
        identity=site_identity("eu-a"),
        tls=tls,
        token=token,
    )
    unsure = np.array([[0.1, 0.0]], np.float32)  # edge: 0.52 / 0.48; cloud: 0.73 / 0.27
    sure = np.array([[5.0, 0.0]], np.float32)  # edge: 0.99

    async def scenario() -> None:
        request, local = local_answer(geo_fleet, sure)
        kept = await cascade.maybe_escalate("clf", request, local)
        assert kept is local
        assert "escalated" not in kept.parameters

        request, local = local_answer(geo_fleet, unsure)
        assert probabilities(local).max() < 0.6
        answer = await cascade.maybe_escalate("clf", request, local)
        assert answer.parameters.get("escalated") is True
        assert answer.model_version == "2"  # the cloud's model answered
        np.testing.assert_allclose(probabilities(answer)[0], [0.7311, 0.2689], atol=1e-3)

        request, local = local_answer(geo_fleet, unsure)
        misdirected = await wrong.maybe_escalate("clf", request, local)
        assert misdirected.parameters == {"degraded": True}
        wrong.close()

        for mode in ("blackhole", "reset"):
            cloud.cut(mode)  # type: ignore[arg-type]
            try:
                request, local = local_answer(geo_fleet, unsure)
                started = time.perf_counter()
                degraded = await cut_cascade.maybe_escalate("clf", request, local)
                took = time.perf_counter() - started
            finally:
                cloud.restore()
            assert degraded.parameters == {"degraded": True}
            np.testing.assert_allclose(probabilities(degraded), probabilities(local))
            print(f"\ncloud {mode}: degraded local answer after {took * 1e3:.0f} ms")
        cascade.close()
        cut_cascade.close()

    asyncio.run(scenario())
    assert cascade.stats.escalations == {"clf": 1}
    assert cascade.stats.cloud_answers == {"clf": 1}
    assert cascade.stats.degraded == {}
    assert cut_cascade.stats.escalations == {"clf": 2}
    assert cut_cascade.stats.cloud_answers == {}
    assert cut_cascade.stats.degraded == {"clf": 2}
    assert wrong.stats.cloud_answers == {}
    assert wrong.stats.degraded == {"clf": 1}


def test_cascade_rules_and_config() -> None:
    cascade = Cascade.from_config(
        {
            "target": "http://127.0.0.1:9",
            "models": {"heavy": {"always": True, "target_model": "heavy-large"}},
        }
    )
    assert cascade.applies("heavy")
    assert not cascade.applies("other")
    with pytest.raises(Exception, match="threshold or always"):
        EscalationRule.from_dict({})
    # An HTTPS target must say whom it is: any fleet certificate is not enough.
    with pytest.raises(Exception, match="target_site: NAME"):
        Cascade.from_config({"target": "https://127.0.0.1:9", "models": {}})
    named = Cascade.from_config(
        {"target": "https://127.0.0.1:9", "target_site": "cloud-eu", "models": {}}
    )
    assert named.origin.identity == site_identity("cloud-eu")
    with pytest.raises(Exception, match="not both"):
        Cascade.from_config(
            {"target": "https://h:9", "target_site": "a", "target_gateway": "b", "models": {}}
        )


def _body(x: np.ndarray) -> dict[str, object]:
    return {
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }


def test_gateway_routes_oip_by_data_region_header(geo_fleet: GeoFleet, gateway: str) -> None:
    x = np.zeros((1, 4), np.float32)
    with httpx.Client(base_url=gateway, timeout=10, headers=geo_fleet.auth) as http:
        response = http.post("/v2/models/pump/infer", json=_body(x))
        assert response.status_code == 200, response.text
        assert response.headers["x-modelfleet-site"] in {"eu-a", "eu-b"}
        assert response.json()["outputs"][0]["data"][0] in (1.0, 2.0)
        us = http.post(
            "/v2/models/pump/infer",
            json=_body(x),
            headers={"x-modelfleet-data-region": "US", "x-request-id": "abc"},
        )
        assert us.headers["x-modelfleet-site"] == "us"
        assert us.headers["x-request-id"] == "abc"
        assert us.json()["outputs"][0]["data"][0] == 3.0
        meta = http.get("/v2/models/gear")
        assert meta.status_code == 200
        assert meta.json()["inputs"][0]["name"] == "X"
        assert http.get("/v2/models/gear/ready").status_code == 200
        assert http.get("/v2/health/live").json() == {"live": True}
        assert http.get("/v2/nope").status_code == 404
        refused = http.post(
            "/v2/models/pump/infer", json=_body(x), headers={"x-modelfleet-data-region": "IN"}
        )
        assert refused.status_code == 503
        assert "residency rule IN -> {IN}" in refused.json()["error"]
        assert "modelfleet_gateway_requests_total" in http.get("/metrics").text

        # Added latency over a direct call to the same site through the same link.
        direct_url = geo_fleet.links["us"].url + "/v2/models/pump/infer"
        headers = {"x-modelfleet-data-region": "US"}
        payload = _body(x)
        direct, routed = [], []
        for _ in range(200):
            t0 = time.perf_counter()
            http.post(direct_url, json=payload)
            t1 = time.perf_counter()
            http.post("/v2/models/pump/infer", json=payload, headers=headers)
            routed.append(time.perf_counter() - t1)
            direct.append(t1 - t0)
        added = (statistics.median(routed) - statistics.median(direct)) * 1e3
        print(
            f"\ngateway: direct p50 {statistics.median(direct) * 1e3:.3f} ms, via gateway "
            f"{statistics.median(routed) * 1e3:.3f} ms, added {added:.3f} ms"
        )


class VirtualClock:
    """A WAN link's sense of time that moves only when the link sleeps, by what it asked for:
    what the link holds back is then exact, however fast or busy the machine is."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def test_wan_link_delays_cuts_and_restores() -> None:
    assert parse_duration("40ms") == pytest.approx(0.04)
    assert parse_duration("250us") == pytest.approx(0.00025)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def until(condition: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(60):
                while not condition():
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise AssertionError(f"timed out after 60 s waiting for {what}") from None

    async def scenario() -> None:
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clock = VirtualClock()
        link = await WanLink(
            ("127.0.0.1", port), delay_s=0.02, clock=clock, sleep=clock.sleep
        ).serve()
        reader, writer = await asyncio.open_connection(link.host, link.port)
        t0 = clock.now
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 60) == b"ping"
        # A new connection: the first bytes go up after the handshake (3 x 20 ms from the
        # accept), the answer comes down 20 ms later.
        assert clock.now - t0 == pytest.approx(0.08)
        assert clock.slept == pytest.approx([0.06, 0.02])
        link.set(delay_s=0.05)
        t0 = clock.now
        writer.write(b"pong")
        assert await asyncio.wait_for(reader.readexactly(4), 60) == b"pong"
        assert clock.now - t0 == pytest.approx(0.1)  # kept alive: one round trip of 2 x 50 ms
        link.cut()
        up_before = link.stats.bytes_up
        writer.write(b"held")
        # The link has read the chunk and waited out its delay: now the partition holds it.
        await until(lambda: len(clock.slept) == 5, "the held chunk's delay")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(4), 0.3)
        assert link.stats.bytes_up == up_before  # nothing went through while cut
        link.restore()
        assert await asyncio.wait_for(reader.readexactly(4), 60) == b"held"
        link.cut("reset")
        assert await asyncio.wait_for(reader.read(), 60) == b""  # connection reset
        writer.close()
        await link.aclose()
        server.close()

    asyncio.run(scenario())


def test_the_cascade_never_forwards_the_clients_id_as_a_header() -> None:
    """A request id holding CR/LF once became injected headers on the cascaded call (one
    of them lifting residency at a gateway target); the outbound call now carries an id of
    its own and the client's only inside the body."""
    seen: list[bytes] = []

    async def scenario() -> None:
        async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(record, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        cascade = Cascade(
            f"http://127.0.0.1:{port}",
            {"clf": EscalationRule(always=True)},
            deadline_s=30.0,
            data_region="EU",
        )
        hostile = "edge-1\r\nx-injected: yes\r\nx-modelfleet-data-region: *"
        x = np.zeros((1, 2), np.float32)
        request = InferRequest(id=hostile, inputs=[to_numpy_input(x, "X")])
        local = InferResponse(model_name="clf", outputs=[], id=hostile)
        answer = await cascade.maybe_escalate("clf", request, local)
        assert answer.parameters == {"degraded": True}  # the recorder refused it
        cascade.close()
        server.close()

    asyncio.run(scenario())
    [head] = seen
    lines = head.decode("latin-1").lower().split("\r\n")
    assert not any(line.startswith("x-injected") for line in lines)
    regions = [line for line in lines if line.startswith("x-modelfleet-data-region")]
    assert regions == ["x-modelfleet-data-region: eu"]
    [request_id] = [line.split(": ", 1)[1] for line in lines if line.startswith("x-request-id")]
    assert len(request_id) == 32
    assert request_id.isalnum()
