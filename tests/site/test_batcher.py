"""Adaptive batching: grouping, splitting, isolation of failures, and 64 concurrent clients."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelfleet.errors import InvalidInput, Overloaded
from modelfleet.site import batcher as batcher_module
from modelfleet.site.batcher import Batcher, BatchPolicy
from modelfleet.site.repository import ModelRepository
from modelfleet.site.server import InferenceServer
from tests.site.test_oip_conformance import LiveSite, add_model, load

Feeds = dict[str, np.ndarray[Any, Any]]


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (the suite has no asyncio plugin)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


class FakeModel:
    """Row-wise model (y = x * 2); records batch sizes; can be held to let a queue form."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def run(self, feeds: Feeds, names: list[str]) -> Feeds:
        self.entered.set()
        assert self.gate.wait(60), "the test never opened the gate"
        x = feeds["x"]
        self.calls.append(x.shape[0])
        if np.isnan(x).any():
            raise InvalidInput("NaN in input")
        return dict.fromkeys(names, x * 2)


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(2)
    yield pool
    pool.shutdown()


def rows(n: int, start: float = 0.0, width: int = 2) -> np.ndarray[Any, Any]:
    return (np.arange(n * width, dtype=np.float32) + start).reshape(n, width)


def test_policy_from_params() -> None:
    assert BatchPolicy.from_params({}) == BatchPolicy(1, 0.0)
    assert (
        BatchPolicy.from_params({"max_batch_size": 8, "max_batch_time_ms": 2}).max_batch_size == 8
    )
    for bad in ({"max_batch_size": 0}, {"max_batch_size": "8"}, {"max_batch_time_ms": -1}):
        with pytest.raises(InvalidInput):
            BatchPolicy.from_params(bad)


#: A batching window no test could wait out: a lone request that waited for it would hang.
HOUR_MS = 3_600_000.0


@run_async
async def test_lone_request_runs_at_once(executor: ThreadPoolExecutor) -> None:
    model = FakeModel()
    batcher = Batcher(model.run, BatchPolicy(32, HOUR_MS), executor, batchable=True)
    # Cheap batches run inline: the lone request is answered within the loop turn that
    # flushes it, however long the window and however slow the machine.
    future = batcher.submit({"x": rows(3)}, ("y",))
    for _ in range(3):
        await asyncio.sleep(0)
    assert future.done()
    np.testing.assert_array_equal(future.result()["y"], rows(3) * 2)
    assert model.calls == [3]
    # On a worker thread (no inline runs), it starts at once too: an hour-long window would
    # outlast the (generous) deadline 60 times.
    threaded = Batcher(
        model.run, BatchPolicy(32, HOUR_MS), executor, batchable=True, inline_below_s=0
    )
    out = await asyncio.wait_for(threaded.submit({"x": rows(2)}, ("y",)), timeout=60)
    np.testing.assert_array_equal(out["y"], rows(2) * 2)
    assert model.calls == [3, 2]


@run_async
async def test_queue_forms_while_busy_and_splits_back(executor: ThreadPoolExecutor) -> None:
    model = FakeModel()
    model.gate.clear()
    batcher = Batcher(model.run, BatchPolicy(8, 2.0), executor, batchable=True, inline_below_s=0)
    first = batcher.submit({"x": rows(1, 100)}, ("y",))
    await asyncio.sleep(0)
    assert await asyncio.get_running_loop().run_in_executor(None, model.entered.wait, 60)
    sizes = [1, 2, 3, 2, 4, 1]  # 13 rows: batches of at most 8 rows
    futures = [batcher.submit({"x": rows(n, 10.0 * i)}, ("y",)) for i, n in enumerate(sizes)]
    model.gate.set()
    await first
    results = await asyncio.gather(*futures)
    for i, (n, out) in enumerate(zip(sizes, results, strict=True)):
        np.testing.assert_array_equal(out["y"], rows(n, 10.0 * i) * 2)
    assert model.calls[0] == 1
    assert all(size <= 8 for size in model.calls[1:])
    assert sum(model.calls[1:]) == 13
    assert len(model.calls) < 1 + len(sizes)  # some requests did share a call


@run_async
async def test_incompatible_requests_never_share_a_batch(executor: ThreadPoolExecutor) -> None:
    model = FakeModel()
    model.gate.clear()
    batcher = Batcher(model.run, BatchPolicy(64, 2.0), executor, batchable=True, inline_below_s=0)
    blocker = batcher.submit({"x": rows(1)}, ("y",))
    assert await asyncio.get_running_loop().run_in_executor(None, model.entered.wait, 60)
    a = batcher.submit({"x": rows(2, width=2)}, ("y",))
    b = batcher.submit({"x": rows(2, width=3)}, ("y",))  # other trailing shape
    c = batcher.submit({"x": rows(2, width=2)}, ("z",))  # other requested outputs
    d = batcher.submit({"x": rows(2, width=2).astype(np.float64)}, ("y",))  # other dtype
    model.gate.set()
    await blocker
    outs = await asyncio.gather(a, b, c, d)
    assert set(outs[2]) == {"z"}
    assert set(outs[0]) == {"y"}
    assert outs[1]["y"].shape == (2, 3)
    assert model.calls == [1, 2, 2, 2, 2]


@run_async
async def test_a_bad_request_fails_alone(executor: ThreadPoolExecutor) -> None:
    model = FakeModel()
    model.gate.clear()
    batcher = Batcher(model.run, BatchPolicy(64, 2.0), executor, batchable=True, inline_below_s=0)
    blocker = batcher.submit({"x": rows(1)}, ("y",))
    assert await asyncio.get_running_loop().run_in_executor(None, model.entered.wait, 60)
    bad_rows = rows(2)
    bad_rows[1, 0] = np.nan
    good = batcher.submit({"x": rows(2)}, ("y",))
    bad = batcher.submit({"x": bad_rows}, ("y",))
    model.gate.set()
    await blocker
    np.testing.assert_array_equal((await good)["y"], rows(2) * 2)
    with pytest.raises(InvalidInput):
        await bad


@run_async
async def test_non_row_wise_outputs_are_answered_one_by_one(
    executor: ThreadPoolExecutor,
) -> None:
    calls: list[int] = []

    def summing(feeds: Feeds, names: list[str]) -> Feeds:
        calls.append(feeds["x"].shape[0])
        return {"y": feeds["x"].sum(axis=0, keepdims=True)}

    batcher = Batcher(summing, BatchPolicy(64, 2.0), executor, batchable=True)
    a = batcher.submit({"x": rows(2)}, ("y",))
    b = batcher.submit({"x": rows(3, 50)}, ("y",))
    out_a, out_b = await asyncio.gather(a, b)
    np.testing.assert_array_equal(out_a["y"], rows(2).sum(axis=0, keepdims=True))
    np.testing.assert_array_equal(out_b["y"], rows(3, 50).sum(axis=0, keepdims=True))
    assert calls == [5, 2, 3]


def test_64_concurrent_clients_get_their_own_rows(tmp_path: Path) -> None:
    """Over real HTTP: each client tags its rows; answers must be exactly its rows + 1."""
    repository = ModelRepository()
    model = load(add_model(tmp_path / "add.onnx", 1.0), "add", 1, max_batch_size=32)
    repository.activate(model)
    server = InferenceServer(repository)
    live = LiveSite(server)
    clients = 64

    async def one_client(index: int, http: httpx.AsyncClient) -> None:
        for round_ in range(4):
            n = 1 + (index * 7 + round_) % 40  # some above max_batch_size: they run alone
            x = np.full((n, 4), index * 1000 + round_, dtype=np.float32)
            x[:, 1] = np.arange(n)
            body = {
                "id": f"c{index}-{round_}",
                "parameters": {"client": index},
                "inputs": [
                    {"name": "X", "datatype": "FP32", "shape": [n, 4], "data": x.ravel().tolist()}
                ],
            }
            answer = await http.post("/v2/models/add/infer", json=body)
            assert answer.status_code == 200, answer.text
            doc = answer.json()
            assert doc["id"] == f"c{index}-{round_}"
            assert doc["parameters"] == {"client": index}
            out = np.array(doc["outputs"][0]["data"], dtype=np.float32).reshape(n, 4)
            np.testing.assert_array_equal(out, x + 1)

    async def main() -> None:
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(base_url=live.url, limits=limits, timeout=30) as http:
            await asyncio.gather(*(one_client(i, http) for i in range(clients)))

    try:
        asyncio.run(main())
        batcher = server.served(model).batcher
        print(f"{batcher.requests} requests in {batcher.batches} batched calls")
        assert batcher.requests == clients * 4
    finally:
        live.close()


@run_async
async def test_a_full_queue_answers_overloaded(
    executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a batch runs, at most MAX_PENDING_REQUESTS wait; the next is refused at once
    (503 at the site) instead of queueing without bound, and the queue drains normally."""
    monkeypatch.setattr(batcher_module, "MAX_PENDING_REQUESTS", 3)
    model = FakeModel()
    model.gate.clear()
    batcher = Batcher(model.run, BatchPolicy(1, 0.0), executor, batchable=True, inline_below_s=0)
    first = batcher.submit({"x": rows(1)}, ("y",))
    await asyncio.sleep(0)
    assert await asyncio.get_running_loop().run_in_executor(None, model.entered.wait, 60)
    waiting = [batcher.submit({"x": rows(1, i)}, ("y",)) for i in range(3)]
    with pytest.raises(Overloaded, match="holds 3 requests"):
        batcher.submit({"x": rows(1)}, ("y",))
    assert batcher.refused == 1
    model.gate.set()
    await first
    assert len(await asyncio.gather(*waiting)) == 3
    assert batcher.pending_requests == 0
    assert batcher.pending_bytes == 0


@run_async
async def test_a_request_that_waited_too_long_is_failed_not_run(
    executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = FakeModel()
    model.gate.clear()
    batcher = Batcher(model.run, BatchPolicy(4, 0.0), executor, batchable=True, inline_below_s=0)
    first = batcher.submit({"x": rows(1)}, ("y",))
    await asyncio.sleep(0)
    assert await asyncio.get_running_loop().run_in_executor(None, model.entered.wait, 60)
    # From now on a negative timeout: a request still waiting is past its deadline when its
    # turn comes, on any machine (no clock in the test).
    monkeypatch.setattr(batcher_module, "QUEUE_TIMEOUT_S", -1.0)
    late = batcher.submit({"x": rows(2)}, ("y",))
    model.gate.set()
    await first
    with pytest.raises(Overloaded, match="waited over"):
        await late
    assert model.calls == [1]  # the expired request never reached the model
