"""The shared background loop and back-off (modelfleet.loops).

No assertion here depends on how long anything took: the loops run with hour-long waits that
only ``wake``/``stop`` can end, and each test waits on events the step sets (the timeouts on
those waits only keep a broken loop from hanging the suite).
"""

from __future__ import annotations

import logging
import random
import threading

import pytest

from modelfleet.loops import BackgroundLoop, Backoff

HOUR = 3600.0
BOUND = 10.0  # a safety bound on event waits, never the thing asserted


def _loop_threads(name: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name == name and t.is_alive())


# --- Backoff --------------------------------------------------------------------------


def test_backoff_ceiling_doubles_from_first_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 10.0)
    assert [backoff.ceiling(n) for n in range(0, 7)] == [0.5, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0]


def test_backoff_max_doublings_bounds_the_ceiling_below_the_cap() -> None:
    backoff = Backoff(1.0, 1000.0, max_doublings=3)
    assert backoff.ceiling(4) == 8.0
    assert backoff.ceiling(50) == 8.0


def test_backoff_delay_is_equal_jitter_within_half_and_full_ceiling() -> None:
    backoff = Backoff(1.0, 60.0, rng=random.Random(7))
    for failures in range(1, 12):
        ceiling = backoff.ceiling(failures)
        for _ in range(50):
            assert ceiling / 2 <= backoff.delay(failures) <= ceiling


def test_backoff_is_deterministic_with_an_injected_random_source() -> None:
    first = Backoff(0.5, 30.0, rng=random.Random(42))
    second = Backoff(0.5, 30.0, rng=random.Random(42))
    assert [first.delay(n) for n in range(1, 10)] == [second.delay(n) for n in range(1, 10)]


def test_backoff_refuses_negative_times() -> None:
    with pytest.raises(ValueError, match="negative"):
        Backoff(-1.0, 10.0)
    with pytest.raises(ValueError, match="max_doublings"):
        Backoff(1.0, 10.0, max_doublings=-1)


# --- BackgroundLoop ----------------------------------------------------------------------


class Recorder:
    """A step that counts its calls and lets the test wait for the n-th one."""

    def __init__(self, answers: list[float | None] | None = None) -> None:
        self.calls = 0
        self.answers = list(answers or [])
        self._cond = threading.Condition()

    def __call__(self) -> float | None:
        with self._cond:
            self.calls += 1
            self._cond.notify_all()
        return self.answers.pop(0) if self.answers else None

    def wait_for(self, calls: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.calls >= calls, timeout=BOUND)


def test_the_step_runs_at_once_then_waits_the_interval_until_woken() -> None:
    step = Recorder()
    loop = BackgroundLoop("test-wake", step, interval_s=HOUR)
    loop.start()
    try:
        assert step.wait_for(1)
        assert step.calls == 1  # the hour-long wait holds it
        loop.wake()
        assert step.wait_for(2)
    finally:
        loop.stop()
    assert not loop.running


def test_the_steps_answer_overrides_the_interval() -> None:
    step = Recorder(answers=[0.0, 0.0, None])
    loop = BackgroundLoop("test-answer", step, interval_s=HOUR)
    loop.start()
    try:
        assert step.wait_for(3)  # two zero waits, then the hour
    finally:
        loop.stop()


def test_first_wait_delays_the_first_step_until_woken() -> None:
    step = Recorder()
    loop = BackgroundLoop("test-first", step, interval_s=HOUR, first_wait_s=lambda: HOUR)
    loop.start()
    try:
        assert step.calls == 0
        loop.wake()
        assert step.wait_for(1)
    finally:
        loop.stop()


def test_stop_ends_an_hour_long_wait_and_start_stop_are_idempotent() -> None:
    step = Recorder()
    loop = BackgroundLoop("test-idempotent", step, interval_s=HOUR)
    loop.start()
    loop.start()
    assert step.wait_for(1)
    assert _loop_threads("test-idempotent") == 1
    loop.stop()
    loop.stop()
    assert not loop.running
    assert loop.stopping
    assert step.calls == 1


def test_a_stopped_loop_starts_again() -> None:
    step = Recorder()
    loop = BackgroundLoop("test-restart", step, interval_s=HOUR)
    loop.start()
    assert step.wait_for(1)
    loop.stop()
    loop.start()
    try:
        assert step.wait_for(2)
        assert not loop.stopping
    finally:
        loop.stop()


def test_an_exception_is_logged_with_the_loops_name_and_backed_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    waits: list[int] = []
    done = threading.Event()

    def step() -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("boom")
        done.set()

    def error_wait(failures: int) -> float:
        waits.append(failures)
        return 0.0

    loop = BackgroundLoop("test-errors", step, interval_s=HOUR, error_wait=error_wait)
    with caplog.at_level(logging.ERROR, logger="modelfleet.loops"):
        loop.start()
        try:
            assert done.wait(BOUND)
        finally:
            loop.stop()
    assert waits == [1, 2]  # consecutive failures counted, each answered by the back-off
    messages = [r.getMessage() for r in caplog.records if r.exc_info]
    assert messages == ["test-errors failed", "test-errors failed"]


def test_failures_go_to_the_owners_logger_with_its_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    owner = logging.getLogger("modelfleet.test.owner")
    failed = threading.Event()

    def step() -> None:
        failed.set()
        raise ValueError("once")

    loop = BackgroundLoop(
        "test-owner", step, interval_s=HOUR, logger=owner, failure_message="owner pass failed"
    )
    with caplog.at_level(logging.ERROR, logger="modelfleet.test.owner"):
        loop.start()
        try:
            assert failed.wait(BOUND)
        finally:
            loop.stop()
    assert loop.running is False
    assert [r.name for r in caplog.records] == ["modelfleet.test.owner"]
    assert caplog.records[0].getMessage() == "owner pass failed"


def test_sleep_inside_a_step_ends_on_stop() -> None:
    entered = threading.Event()
    results: list[bool] = []
    loop: BackgroundLoop

    def step() -> None:
        entered.set()
        results.append(loop.sleep(HOUR))

    loop = BackgroundLoop("test-sleep", step, interval_s=HOUR)
    loop.start()
    assert entered.wait(BOUND)
    loop.stop()
    assert results == [True]
