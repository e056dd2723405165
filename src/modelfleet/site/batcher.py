"""Adaptive batching: requests to one model version that arrive together run as one session call.

Policy: *work-conserving*. The batcher never waits on purpose while the executor is idle, so a
lone request starts at once (its batching delay is one event-loop turn, microseconds, far below
``max_batch_time_ms``). While a batch is running, new requests queue; when it finishes, the
queue is drained into the next batch, up to ``max_batch_size`` rows. Batch size therefore
follows load: 1 at low concurrency (no latency paid), large under pressure (throughput). A
request waits at most for the batch in flight plus its own, and never for a timer.

Why not wait ``max_batch_time_ms`` to fill batches (MLServer's approach)? Measured on the
benchmark models, every request pays that wait at low load while the queue that forms anyway
under load fills batches just as well (see docs/benchmarks.md). ``max_batch_time_ms``
stays the documented ceiling of the deliberate wait, which this policy keeps at zero.

Soundness rules:
- only requests with the same requested outputs and the same dtype and trailing shape per
  input (the batching *key*) share a batch; each request keeps its own id and parameters,
  which never enter the batcher;
- every output of the batch must come back with the concatenated row count, otherwise (or if
  the batched call fails) each request is re-run alone, so one bad request fails alone;
- a request larger than ``max_batch_size`` runs alone, unsplit.

Bounds: the queue of one model version holds at most :data:`MAX_PENDING_REQUESTS` requests
and :data:`MAX_PENDING_BYTES` of inputs, and a request that waited :data:`QUEUE_TIMEOUT_S`
without starting is failed: each answered ``Overloaded`` (503), so a flood slows the site
down to its own speed instead of filling its memory with work nobody waits for any more.

Cheap batches run inline on the event loop when the executor is idle: a thread hop costs more
than a small model's whole run (tens of microseconds). Expensive ones go to a worker thread,
where onnxruntime releases the GIL and the loop keeps parsing requests on the other core.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from modelfleet.errors import InvalidInput, Overloaded

__all__ = ["BatchPolicy", "Batcher", "RunFn"]

Feeds = dict[str, npt.NDArray[Any]]
Results = dict[str, npt.NDArray[Any]]
#: ``run(feeds, output_names) -> outputs``: the model call (``LoadedModel.run``).
RunFn = Callable[[Feeds, list[str]], Results]

#: A batch whose recent runs took less than this runs inline on the loop when it is idle.
DEFAULT_INLINE_BELOW_S = 0.0003
_EMA = 0.2  # weight of the newest run in the moving average of run times
#: What one model version's queue may hold before new requests get 503.
MAX_PENDING_REQUESTS = 4096
MAX_PENDING_BYTES = 256 * 1024 * 1024
#: A request still waiting to start after this long is failed with 503 (its caller has
#: usually given up; the router retries elsewhere).
QUEUE_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """Serving parameters of one model version; ``max_batch_size`` 1 disables batching."""

    max_batch_size: int = 1
    max_batch_time_ms: float = 0.0

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> BatchPolicy:
        """Read ``max_batch_size`` / ``max_batch_time_ms`` from assignment parameters."""
        size = params.get("max_batch_size", 1)
        wait = params.get("max_batch_time_ms", 0.0)
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 65536:
            raise InvalidInput(f"max_batch_size must be an integer in [1, 65536], got {size!r}")
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= 60000:
            raise InvalidInput(f"max_batch_time_ms must be a number in [0, 60000], got {wait!r}")
        return cls(size, float(wait))


@dataclass(slots=True)
class _Item:
    feeds: Feeds
    rows: int
    future: asyncio.Future[Results]
    nbytes: int
    queued_at: float


class Batcher:
    """Per model version; lives on one event loop (every method but the worker's runs there)."""

    def __init__(
        self,
        run: RunFn,
        policy: BatchPolicy,
        executor: Executor,
        *,
        batchable: bool,
        inline_below_s: float = DEFAULT_INLINE_BELOW_S,
    ) -> None:
        self._run = run
        self.policy = policy
        self.max_rows = policy.max_batch_size if batchable else 1
        self._executor = executor
        self._inline_below_s = inline_below_s
        # Insertion-ordered: the oldest key is served first, so no key starves.
        self._pending: dict[tuple[Any, ...], list[_Item]] = {}
        self._busy = False
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.run_time_s = 0.0  # moving average of one call, read to choose inline or thread
        self.batches = 0
        self.requests = 0
        self.pending_requests = 0
        self.pending_bytes = 0
        self.refused = 0  # requests answered Overloaded (queue full or waited too long)

    def submit(self, feeds: Feeds, outputs: tuple[str, ...]) -> asyncio.Future[Results]:
        """Queue one validated request; the future yields its own rows of each output."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Results] = loop.create_future()
        nbytes = sum(int(array.nbytes) for array in feeds.values())
        if self._busy and (
            self.pending_requests >= MAX_PENDING_REQUESTS
            or self.pending_bytes + nbytes > MAX_PENDING_BYTES
        ):
            self.refused += 1
            raise Overloaded(
                f"the queue of this model holds {self.pending_requests} requests "
                f"({self.pending_bytes} bytes); retry later"
            )
        rows, key = _rows_and_key(feeds, outputs, self.max_rows > 1)
        item = _Item(feeds, rows, future, nbytes, time.monotonic())
        self.pending_requests += 1
        self.pending_bytes += nbytes
        items = self._pending.get(key)
        if items is None:
            self._pending[key] = [item]
        else:
            items.append(item)
        if not self._busy and not self._scheduled:
            # One loop turn later: requests parsed in this same turn join the batch.
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _take(self) -> tuple[list[_Item], list[str]]:
        key = next(iter(self._pending))
        items = self._pending[key]
        taken = [items[0]]
        rows = items[0].rows
        index = 1
        while index < len(items) and rows + items[index].rows <= self.max_rows:
            rows += items[index].rows
            taken.append(items[index])
            index += 1
        if index == len(items):
            del self._pending[key]
        else:
            del items[:index]
        for item in taken:
            self.pending_requests -= 1
            self.pending_bytes -= item.nbytes
        return taken, list(key[0])

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending and not self._busy:
            items, names = self._take()
            items = [item for item in items if not item.future.done()]  # client went away
            if items:
                items = self._drop_expired(items)
            if not items:
                continue
            self.batches += 1
            self.requests += len(items)
            if self.run_time_s < self._inline_below_s:
                self._finish(items, self._execute(items, names))
                continue
            self._busy = True
            loop = self._loop
            if loop is None:  # pragma: no cover - submit() always sets it first
                raise RuntimeError("batcher used outside an event loop")
            work = loop.run_in_executor(self._executor, self._execute, items, names)
            work.add_done_callback(functools.partial(self._completed, items))
            return

    def _drop_expired(self, items: list[_Item]) -> list[_Item]:
        """Fail the items that waited longer than :data:`QUEUE_TIMEOUT_S`; the rest."""
        oldest_allowed = time.monotonic() - QUEUE_TIMEOUT_S
        if items[0].queued_at >= oldest_allowed:  # the oldest of the batch is first
            return items
        kept = []
        for item in items:
            if item.queued_at < oldest_allowed:
                self.refused += 1
                item.future.set_exception(
                    Overloaded(f"waited over {QUEUE_TIMEOUT_S:.0f} s in the model's queue")
                )
            else:
                kept.append(item)
        return kept

    def _completed(
        self, items: list[_Item], done: asyncio.Future[list[Results | Exception]]
    ) -> None:
        self._busy = False
        try:
            outcomes = done.result()
        except Exception as exc:  # the executor itself failed (e.g. shut down)
            outcomes = [exc] * len(items)
        self._finish(items, outcomes)
        if self._pending and not self._scheduled:
            self._flush()

    @staticmethod
    def _finish(items: list[_Item], outcomes: list[Results | Exception]) -> None:
        for item, outcome in zip(items, outcomes, strict=True):
            if item.future.done():
                continue
            if isinstance(outcome, Exception):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)

    def _execute(self, items: list[_Item], names: list[str]) -> list[Results | Exception]:
        """Run on the loop or a worker thread; never raises, one outcome per item."""
        started = time.perf_counter()
        try:
            if len(items) == 1:
                return [self._call(items[0].feeds, names)]
            total = sum(item.rows for item in items)
            try:
                feeds = {
                    name: np.concatenate([item.feeds[name] for item in items])
                    for name in items[0].feeds
                }
                results = self._run(feeds, names)
            except Exception:  # one request may be at fault: let each fail or pass alone
                return [self._call(item.feeds, names) for item in items]
            if any(out.ndim == 0 or out.shape[0] != total for out in results.values()):
                # Not row-wise after all (the model mixes rows): answer each on its own.
                return [self._call(item.feeds, names) for item in items]
            outcomes: list[Results | Exception] = []
            start = 0
            for item in items:
                stop = start + item.rows
                outcomes.append({name: out[start:stop] for name, out in results.items()})
                start = stop
            return outcomes
        finally:
            elapsed = time.perf_counter() - started
            self.run_time_s += _EMA * (elapsed - self.run_time_s)

    def _call(self, feeds: Feeds, names: list[str]) -> Results | Exception:
        try:
            return self._run(feeds, names)
        except Exception as exc:  # returned, not raised: it belongs to that one request
            return exc


def _rows_and_key(
    feeds: Feeds, outputs: tuple[str, ...], batching: bool
) -> tuple[int, tuple[Any, ...]]:
    """Rows of the request and the key of requests it may share a batch with.

    A request that cannot be batched (batching off, a scalar input, or inputs that disagree on
    their first dimension, which the model will reject anyway) gets a key of its own.
    """
    rows = -1
    parts: list[tuple[str, str, tuple[int, ...]]] = []
    for name, arr in feeds.items():
        shape = arr.shape
        if not shape or (rows >= 0 and shape[0] != rows):
            rows = -1
            break
        rows = shape[0]
        parts.append((name, arr.dtype.str, shape[1:]))
    if not batching or rows <= 0:
        return max(rows, 1), (outputs, object())
    return rows, (outputs, tuple(parts))
