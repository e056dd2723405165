"""ModelRepository: activation, previous versions, retirement and swaps under load."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from modelfleet.errors import Conflict, NotFound
from modelfleet.site.repository import ModelRepository
from modelfleet.site.runtime import LoadedModel
from tests.site.test_runtime import DIGEST, add_model

X = np.zeros((1, 4), dtype=np.float32)


@pytest.fixture
def make(tmp_path: Path) -> Callable[..., LoadedModel]:
    def build(version: int, name: str = "m") -> LoadedModel:
        path = add_model(tmp_path / f"{name}-{version}.onnx", offset=float(version))
        return LoadedModel.load(path, name=name, version=version, digest=DIGEST)

    return build


def answer(model: LoadedModel) -> float:
    return float(model.run({"X": X})["Y"][0, 0])


def test_empty_repository() -> None:
    repo = ModelRepository()
    assert repo.names() == []
    assert repo.snapshot() == {}
    with pytest.raises(NotFound, match="not loaded"):
        repo.get("m")
    assert repo.remove("m") == []


def test_activate_keeps_previous(make: Callable[..., LoadedModel]) -> None:
    repo = ModelRepository()
    v1, v2, v3 = make(1), make(2), make(3)
    assert repo.activate(v1) is None
    assert repo.activate(v2) is v1
    assert repo.get("m") is v2
    assert repo.get("m", 1) is v1
    assert repo.snapshot() == {"m": {"active": 2, "loaded": [1, 2]}}
    assert repo.activate(v3) is v2
    assert repo.snapshot() == {"m": {"active": 3, "loaded": [2, 3]}}
    with pytest.raises(NotFound, match=r"loaded: \[2, 3\] \(active 3\)"):
        repo.get("m", 1)


def test_rollback_to_previous(make: Callable[..., LoadedModel]) -> None:
    repo = ModelRepository()
    v1, v2 = make(1), make(2)
    repo.activate(v1)
    repo.activate(v2)
    assert repo.activate(repo.get("m", 1)) is v2
    assert repo.snapshot() == {"m": {"active": 1, "loaded": [1, 2]}}


def test_reactivating_same_version_replaces_it(make: Callable[..., LoadedModel]) -> None:
    repo = ModelRepository()
    v1, v2, v2b = make(1), make(2), make(2)
    repo.activate(v1)
    repo.activate(v2)
    assert repo.activate(v2b) is v2
    assert repo.get("m") is v2b
    assert repo.get("m", 1) is v1


def test_retire_and_remove(make: Callable[..., LoadedModel]) -> None:
    repo = ModelRepository()
    v1, v2, other = make(1), make(2), make(1, name="other")
    repo.activate(v1)
    repo.activate(v2)
    repo.activate(other)
    assert repo.names() == ["m", "other"]
    with pytest.raises(Conflict, match="active"):
        repo.retire("m", 2)
    with pytest.raises(NotFound):
        repo.retire("m", 7)
    assert repo.retire("m", 1) is v1
    assert repo.snapshot()["m"] == {"active": 2, "loaded": [2]}
    assert repo.remove("m") == [v2]
    assert repo.names() == ["other"]
    with pytest.raises(NotFound):
        repo.get("m")


def test_swap_lets_running_request_finish_on_old_version(
    make: Callable[..., LoadedModel],
) -> None:
    repo = ModelRepository()
    repo.activate(make(1))
    repo.activate(make(2))
    looked_up = threading.Event()
    proceed = threading.Event()
    results: dict[str, float] = {}
    errors: list[BaseException] = []

    def slow_request() -> None:
        try:
            model = repo.get("m")  # looked up before the swap ...
            looked_up.set()
            proceed.wait(10)
            results["slow"] = answer(model)  # ... and run after it
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=slow_request)
    thread.start()
    assert looked_up.wait(10)
    old_ref = weakref.ref(repo.get("m", 1))
    repo.activate(make(3))  # drops v1; v2 becomes previous, and is still held by the thread

    concurrent = threading.Thread(target=lambda: results.setdefault("new", answer(repo.get("m"))))
    concurrent.start()
    concurrent.join(10)
    proceed.set()
    thread.join(10)

    assert not errors
    assert results == {"slow": 2.0, "new": 3.0}
    # Nothing but the repository held v1, so refcounting freed it at the swap.
    assert old_ref() is None


def test_replaced_model_is_freed_when_last_request_ends(
    make: Callable[..., LoadedModel],
) -> None:
    repo = ModelRepository()
    repo.activate(make(1))
    in_flight = repo.get("m")
    ref = weakref.ref(in_flight)
    repo.activate(make(2))
    repo.activate(make(3))  # v1 is no longer in the repository ...
    assert ref() is in_flight  # ... but the running request still has it
    assert answer(in_flight) == 1.0
    del in_flight
    assert ref() is None  # freed at once, without waiting for the cycle collector
    gc.collect()


def test_readers_never_see_a_missing_model_during_swaps(
    make: Callable[..., LoadedModel],
) -> None:
    repo = ModelRepository()
    models = [make(v) for v in range(1, 6)]
    repo.activate(models[0])
    stop = threading.Event()
    failures: list[BaseException] = []
    seen: set[int] = set()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(repo.get("m").version)
            except BaseException as exc:
                failures.append(exc)
                return

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for thread in readers:
        thread.start()
    for _ in range(200):
        for model in models:
            repo.activate(model)
    stop.set()
    for thread in readers:
        thread.join(10)
    assert not failures
    assert seen <= {1, 2, 3, 4, 5}
