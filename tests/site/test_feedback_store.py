"""FeedbackStore: labels joined with remembered predictions, drops by reason, bounds, and
predictions that survive a restart (the store's public interface, a real SQLite file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from modelfleet.errors import InvalidInput
from modelfleet.site.feedback import (
    MAX_LABELS,
    FeedbackCounts,
    FeedbackStore,
    parse_labels,
    predictions_of,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[str, int, dict[str, Any]]] = []

    def __call__(self, model: str, version: int, counts: FeedbackCounts) -> None:
        self.got.append((model, version, counts.to_dict()))


def classes(*values: int) -> dict[str, np.ndarray[Any, Any]]:
    return {"label": np.array(values, dtype=np.int64)}


def store(tmp_path: Path, sink: Sink, clock: Clock, **kw: Any) -> FeedbackStore:
    return FeedbackStore(tmp_path / "feedback.db", sink, clock=clock, **kw)


def test_join_counts_confusion_and_drops_by_reason(tmp_path: Path) -> None:
    sink, clock = Sink(), Clock()
    fb = store(tmp_path, sink, clock, window_s=100)
    fb.remember("m", 1, "a", classes(1))
    fb.remember("m", 1, "b", classes(0))
    fb.remember("m", 2, "c", classes(1))
    fb.remember("m", 1, "old", classes(1))
    clock.now += 50
    fb.remember("m", 2, "d", classes(1))
    clock.now += 60  # "a", "b", "c", "old" are 110 s old now: past the 100 s window
    result = fb.join("m", [("d", 1)], current_version=2)
    assert result.to_dict() == {
        "accepted": 1,
        "dropped": {"unknown_id": 0, "expired": 0, "duplicate": 0, "bad_label": 0},
    }
    clock.now -= 20  # back inside the window for the others
    result = fb.join(
        "m",
        [("a", 1), ("b", 1), ("c", "0"), ("d", 1), ("nope", 1), ("a", 0), ("old", 1)],
        current_version=2,
    )
    assert result.accepted == 4
    assert result.dropped == {"unknown_id": 1, "expired": 0, "duplicate": 2, "bad_label": 0}
    v1 = [c for m, v, c in sink.got if v == 1]
    assert v1[-1]["confusion"] == [["1", "0", 1], ["1", "1", 2]]
    assert v1[-1]["labels"] == 3
    assert v1[-1]["dropped"]["duplicate"] == 1
    v2 = [c for m, v, c in sink.got if v == 2]
    assert v2[-1]["confusion"] == [["0", "1", 1]]  # label "0" is the class 0
    assert v2[-1]["dropped"] == {"unknown_id": 1, "expired": 0, "duplicate": 1, "bad_label": 0}
    fb.close()


def test_expired_labels_are_dropped(tmp_path: Path) -> None:
    sink, clock = Sink(), Clock()
    fb = store(tmp_path, sink, clock, window_s=10)
    fb.remember("m", 1, "late", classes(1))
    clock.now += 11
    assert fb.join("m", [("late", 1)], 1).dropped["expired"] == 1
    clock.now += 10  # twice the window: forgotten, so unknown
    assert fb.join("m", [("late", 1)], 1).dropped["unknown_id"] == 1
    fb.close()


def test_regressor_sums_and_bad_label(tmp_path: Path) -> None:
    sink, clock = Sink(), Clock()
    fb = store(tmp_path, sink, clock)
    fb.remember("r", 3, "x", {"variable": np.array([[2.5]], dtype=np.float32)})
    fb.remember("r", 3, "y", {"variable": np.array([[1.0]], dtype=np.float32)})
    result = fb.join("r", [("x", 4.0), ("y", "high")], 3)
    assert result.accepted == 1
    assert result.dropped["bad_label"] == 1
    (_, version, counts), *_ = sink.got
    assert version == 3
    assert counts["kind"] == "regressor"
    assert counts["labels"] == 1
    assert counts["abs_error_sum"] == pytest.approx(1.5)
    assert counts["squared_error_sum"] == pytest.approx(2.25)
    fb.close()


def test_rows_of_a_batch_are_labelled_one_by_one(tmp_path: Path) -> None:
    sink, clock = Sink(), Clock()
    fb = store(tmp_path, sink, clock)
    fb.remember("m", 1, "req", {"probabilities": np.array([[0.1, 0.9], [0.8, 0.2]])})
    result = fb.join("m", [("req/0", 1), ("req/1", 1), ("req", 1)], 1)
    assert result.accepted == 2
    assert result.dropped["unknown_id"] == 1
    assert sink.got[0][2]["confusion"] == [["1", "0", 1], ["1", "1", 1]]
    fb.close()


def test_predictions_survive_a_restart(tmp_path: Path) -> None:
    sink, clock = Sink(), Clock()
    fb = store(tmp_path, sink, clock)
    fb.remember("m", 1, "kept", classes(1))
    fb.close()  # a clean stop writes what is buffered
    again = store(tmp_path, sink, clock)
    assert again.join("m", [("kept", 1)], 1).accepted == 1
    again.close()
    third = store(tmp_path, sink, clock)  # the label is remembered too: no double count
    assert third.join("m", [("kept", 1)], 1).dropped["duplicate"] == 1
    third.close()


def test_memory_is_bounded_per_model(tmp_path: Path) -> None:
    sink, clock = Sink(), Clock()
    fb = store(tmp_path, sink, clock, max_per_model=5)
    for i in range(12):
        fb.remember("m", 1, f"r{i}", classes(1))
        fb.remember("other", 1, f"r{i}", classes(1))
        clock.now += 1
    assert fb.remembered("m") == 5
    assert fb.remembered("other") == 5
    result = fb.join("m", [("r0", 1), ("r11", 1)], 1)
    assert result.accepted == 1
    assert result.dropped["unknown_id"] == 1
    fb.close()


def test_outputs_that_name_no_prediction_are_not_remembered() -> None:
    assert predictions_of({}) is None
    assert predictions_of({"label": np.array([["a", "b"]])}) is None
    assert predictions_of({"Y": np.array([[0.2, 0.7, 0.1]], dtype=np.float32)}) == [
        ("classifier", "1")
    ]
    assert predictions_of({"label": np.array(["fail"], dtype=object)}) == [("classifier", "fail")]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", "malformed JSON"),
        (b"[]", "labels"),
        (b'{"labels": []}', "labels"),
        (b'{"labels": [{"id": "a"}]}', "label"),
        (b'{"labels": [{"id": "", "label": 1}]}', "id"),
        (b'{"labels": [{"id": "a", "label": [1]}]}', "label"),
        (b'{"labels": [{"id": "a", "label": 1, "row": [1, 2]}]}', "row"),
    ],
)
def test_bad_bodies_say_what_is_wrong(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        parse_labels(body)


def test_too_many_labels_are_refused_whole() -> None:
    body = orjson.dumps({"labels": [{"id": str(i), "label": 1} for i in range(MAX_LABELS + 1)]})
    with pytest.raises(InvalidInput) as caught:
        parse_labels(body)
    assert caught.value.code == "too_many_labels"
