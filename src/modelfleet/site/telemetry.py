"""Telemetry windows at the site: what the hub learns about serving, without any rows.

:class:`TelemetryRecorder` implements the server's observer protocol. For every model and
version it keeps one open *window* (a time slice, default 10 s, aligned to wall-clock
multiples so windows of different sites line up): request count, outcomes by kind, a
fixed-bucket latency histogram, a batch-size histogram, and a reservoir sample of the
requests' input and output tensors.

The hot path (:meth:`observe`) only counts and keeps a reference to at most
``sample_requests`` requests per window (reservoir sampling: every request has the same
chance of being kept, however busy the window). Sketching happens when the window
closes, on the closer thread, vectorised over all sampled rows at once — so the cost per
request is a lock, a few integer adds and one random draw. Closed windows go to a sink
(the durable spool) as plain dicts; sketches are base64 inside them.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelfleet.loops import BackgroundLoop
from modelfleet.monitoring.histograms import (
    BATCH_BOUNDS,
    LATENCY_BOUNDS,
    batch_bucket,
    latency_bucket,
    sparse,
)
from modelfleet.monitoring.profiles import DatasetProfile
from modelfleet.site.feedback import FeedbackCounts

log = logging.getLogger("modelfleet.site.telemetry")

Tensors = dict[str, np.ndarray[Any, Any]]
#: Receives each closed window (a JSON-able dict); the agent passes ``Spool.put``.
WindowSink = Callable[[dict[str, Any]], object]

#: Outcomes that are not errors; every other outcome counts as an error of that kind.
OK_OUTCOMES = frozenset({"ok", "degraded", "escalated"})


@dataclass
class _Window:
    model: str
    version: int
    start: float
    requests: int = 0
    rows: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    latency_sum: float = 0.0
    batches: list[int] = field(default_factory=lambda: [0] * (len(BATCH_BOUNDS) + 1))
    samples: list[tuple[Tensors | None, Tensors | None]] = field(default_factory=list)
    offered: int = 0  # requests that carried tensors (the reservoir's stream length)
    feedback: FeedbackCounts | None = None  # labels joined in this window (site/feedback.py)


def _stack(arrays: list[np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
    """Concatenate along the batch axis the arrays whose trailing shapes agree."""
    groups: dict[tuple[tuple[int, ...], str], list[np.ndarray[Any, Any]]] = {}
    for array in arrays:
        data = np.asarray(array)
        if data.ndim == 0:
            data = data.reshape(1)
        groups.setdefault((data.shape[1:], data.dtype.kind), []).append(data)
    return [np.concatenate(group) if len(group) > 1 else group[0] for group in groups.values()]


def _profile(samples: list[Tensors]) -> DatasetProfile:
    profile = DatasetProfile()
    names: dict[str, list[np.ndarray[Any, Any]]] = {}
    for tensors in samples:
        for name, array in tensors.items():
            names.setdefault(name, []).append(array)
    for name, arrays in names.items():
        for stacked in _stack(arrays):
            try:
                profile.update_tensor(name, stacked)
            except Exception:  # one odd tensor must not cost the window
                log.debug("tensor %s not profiled", name, exc_info=True)
    return profile


class TelemetryRecorder:
    """Thread-safe windows per model x version; the server's observer."""

    def __init__(
        self,
        sink: WindowSink,
        *,
        window_s: float = 10.0,
        sample_requests: int = 256,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.window_s = window_s
        self.sample_requests = max(0, sample_requests)
        self._sink = sink
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, int], _Window] = {}
        self._closer = BackgroundLoop(
            "telemetry-windows",
            self._close_windows,
            interval_s=self._until_boundary,
            first_wait_s=self._until_boundary,
            logger=log,
            join_timeout_s=5.0,
        )
        self._rng = random.Random()

    # --- hot path ------------------------------------------------------------------------

    def observe(
        self,
        *,
        model: str,
        version: int,
        latency_s: float,
        outcome: str,
        batch_size: int,
        inputs: Tensors | None,
        outputs: Tensors | None,
    ) -> None:
        """Count one answered request; never raises into the request."""
        lat = latency_bucket(latency_s)
        batch = batch_bucket(batch_size)
        with self._lock:
            window = self._windows.get((model, version))
            if window is None:
                start = self._clock()
                start -= start % self.window_s
                window = _Window(model, version, start)
                self._windows[(model, version)] = window
            window.requests += 1
            window.rows += batch_size
            window.outcomes[outcome] = window.outcomes.get(outcome, 0) + 1
            window.latency[lat] += 1
            window.latency_sum += latency_s
            window.batches[batch] += 1
            if (inputs is None and outputs is None) or self.sample_requests == 0:
                return
            window.offered += 1
            if len(window.samples) < self.sample_requests:
                window.samples.append((inputs, outputs))
            else:
                slot = self._rng.randrange(window.offered)
                if slot < self.sample_requests:
                    window.samples[slot] = (inputs, outputs)

    def add_feedback(self, model: str, version: int, counts: FeedbackCounts) -> None:
        """Add the counts of joined labels to the open window of ``model:version``.

        A version with no traffic in this window (labels come after the fact, maybe after
        the site moved on) gets a window of its own with ``requests`` 0: the hub stores
        such a window's ``feedback`` block only, never as traffic.
        """
        with self._lock:
            window = self._windows.get((model, version))
            if window is None:
                start = self._clock()
                start -= start % self.window_s
                window = _Window(model, version, start)
                self._windows[(model, version)] = window
            if window.feedback is None:
                window.feedback = FeedbackCounts()
            window.feedback.merge(counts)

    # --- closing ---------------------------------------------------------------------

    def flush(self) -> int:
        """Close every open window now and hand it to the sink; returns how many."""
        with self._lock:
            closing = list(self._windows.values())
            self._windows = {}
        end = self._clock()
        for window in closing:
            try:
                self._sink(self._close(window, end))
            except Exception:
                log.exception("telemetry window of %s:%s lost", window.model, window.version)
        return len(closing)

    def _close(self, window: _Window, end: float) -> dict[str, Any]:
        inputs = _profile([i for i, _ in window.samples if i is not None])
        outputs = _profile([o for _, o in window.samples if o is not None])
        errors = {k: v for k, v in window.outcomes.items() if k not in OK_OUTCOMES}
        doc: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "model": window.model,
            "version": window.version,
            "start": window.start,
            "end": max(end, window.start),
            "requests": window.requests,
            "rows": window.rows,
            "outcomes": dict(window.outcomes),
            "errors": sum(errors.values()),
            "latency": sparse(window.latency),
            "latency_sum": window.latency_sum,
            "batch_sizes": sparse(window.batches),
            "sampled_requests": len(window.samples),
            "inputs": inputs.to_dict()["columns"],
            "outputs": outputs.to_dict()["columns"],
        }
        if window.feedback is not None:
            doc["feedback"] = window.feedback.to_dict()
        return doc

    def _until_boundary(self) -> float:
        """Seconds to the next multiple of ``window_s``: windows close on the clock's grid."""
        now = self._clock()
        return now - now % self.window_s + self.window_s - now

    def _close_windows(self) -> None:
        self.flush()

    def start(self) -> None:
        self._closer.start()

    def stop(self) -> None:
        """Stop the closer and flush the open windows, so a clean stop loses nothing."""
        self._closer.stop()
        self.flush()
