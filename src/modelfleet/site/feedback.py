"""Ground truth at the site: labels joined with past predictions, shipped only as counts.

A site remembers, for every answered inference request, ``request id -> (version,
prediction, time)`` in its own SQLite file (``feedback.db`` in the state directory). Later
an operator or a process that learns the truth (a machine did fail; a claim was fraud)
posts labels by request id (``POST /v2/models/{m}/feedback``); each label is joined here,
at the site, with its prediction and only the outcome is counted:

- a classifier adds one to the (true class, predicted class) cell of a confusion count;
- a regressor adds to a count, a sum of absolute errors and a sum of squared errors.

The counts ride in the site's telemetry windows (``feedback`` block per model x version,
:meth:`modelfleet.site.telemetry.TelemetryRecorder.add_feedback`); request ids, label
values and input rows never leave the site. A label that cannot be joined is counted as
dropped by reason: ``unknown_id`` (never served here, or forgotten), ``expired`` (the
prediction is older than ``window_s``), ``duplicate`` (already labelled) and
``bad_label`` (a text label for a regressor, or a class beyond :data:`MAX_CLASSES`).

Why a buffer: the hot path only appends ``(model, id, version, prediction, time)`` to a
bounded in-memory list; a background loop writes it to SQLite every second and before any
join, so a clean stop loses nothing and a crash at most the last second of predictions.
Memory and disk are bounded: at most ``max_per_model`` remembered predictions per model
(the oldest go first) and none older than twice ``window_s`` (labels for those read as
``unknown_id``).

What is a classifier: decided from the model's outputs, per request (see
:func:`predictions_of`): an output named ``label``, or the first integer or text output,
gives the predicted class (compared as text, so ``1`` and ``"1"`` are the same class); a
float output with one value per row makes a regressor; a float output with k > 1 values
per row is a classifier whose class is the index of the largest value.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError

from modelfleet.errors import InvalidInput, ModelfleetError, StoreError
from modelfleet.loops import BackgroundLoop

__all__ = [
    "DROP_REASONS",
    "MAX_CLASSES",
    "MAX_LABELS",
    "FeedbackCounts",
    "FeedbackStore",
    "JoinResult",
    "answer_feedback",
    "parse_labels",
    "predictions_of",
]

log = logging.getLogger("modelfleet.site.feedback")

#: Labels one call may carry (a larger batch is refused with 413: split the file).
MAX_LABELS = 10_000
#: Distinct (true, predicted) classes a window counts per version; more is ``bad_label``.
MAX_CLASSES = 64
#: Longest request id remembered (longer ones are not remembered, so read as unknown).
MAX_ID_LEN = 128
#: Why a label was not counted; every reason is always present in answers and windows.
DROP_REASONS = ("unknown_id", "expired", "duplicate", "bad_label")
#: Predictions waiting in memory for the next write; beyond it the oldest are forgotten.
MAX_BUFFERED = 100_000

Kind = Literal["classifier", "regressor"]
Label = str | int | float
#: Receives the counts of one join per model x version (the telemetry recorder).
CountsSink = Callable[[str, int, "FeedbackCounts"], object]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS predictions ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " model TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,"
    " kind TEXT NOT NULL, predicted TEXT NOT NULL, at REAL NOT NULL,"
    " labelled INTEGER NOT NULL DEFAULT 0,"
    " UNIQUE (model, id))",
    "CREATE INDEX IF NOT EXISTS ix_predictions_model_seq ON predictions(model, seq)",
    "CREATE INDEX IF NOT EXISTS ix_predictions_at ON predictions(at)",
)


@dataclass
class FeedbackCounts:
    """What labels taught about one model version: counts only, mergeable by addition."""

    kind: Kind | None = None
    confusion: dict[tuple[str, str], int] = field(default_factory=dict)
    labels: int = 0
    abs_error_sum: float = 0.0
    squared_error_sum: float = 0.0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def merge(self, other: FeedbackCounts) -> None:
        self.kind = self.kind or other.kind
        for cell, n in other.confusion.items():
            self.confusion[cell] = self.confusion.get(cell, 0) + n
        self.labels += other.labels
        self.abs_error_sum += other.abs_error_sum
        self.squared_error_sum += other.squared_error_sum
        for reason, n in other.dropped.items():
            self.drop(reason, n)

    def to_dict(self) -> dict[str, Any]:
        """The ``feedback`` block of a telemetry window (what the hub's schema reads)."""
        return {
            "kind": self.kind,
            "labels": self.labels,
            "confusion": [[t, p, n] for (t, p), n in sorted(self.confusion.items())],
            "abs_error_sum": self.abs_error_sum,
            "squared_error_sum": self.squared_error_sum,
            "dropped": {r: self.dropped.get(r, 0) for r in DROP_REASONS},
        }


@dataclass(frozen=True)
class JoinResult:
    """The answer to one feedback call."""

    accepted: int
    dropped: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "dropped": dict(self.dropped)}


class _LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: StrictStr = Field(min_length=1, max_length=MAX_ID_LEN)
    label: StrictInt | StrictFloat | StrictStr


class _FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: list[_LabelIn] = Field(min_length=1)


def parse_labels(body: bytes) -> list[tuple[str, Label]]:
    """The labels of a feedback body; :class:`InvalidInput` says what is wrong with it.

    More than :data:`MAX_LABELS` labels is refused whole (the caller answers 413), so a
    client learns to split rather than having part of its batch silently ignored.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"feedback: malformed JSON: {exc}") from exc
    labels = doc.get("labels") if isinstance(doc, dict) else None
    if isinstance(labels, list) and len(labels) > MAX_LABELS:
        raise InvalidInput(
            f"feedback: {len(labels)} labels in one call, at most {MAX_LABELS}; split the batch",
            code="too_many_labels",
        )
    try:
        parsed = _FeedbackIn.model_validate(doc)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(
            f'feedback: {where}: {first["msg"]} (expected {{"labels": [{{"id": "...", '
            f'"label": <class or number>}}, ...]}})'
        ) from exc
    out: list[tuple[str, Label]] = []
    for item in parsed.labels:
        if isinstance(item.label, float) and not np.isfinite(item.label):
            raise InvalidInput(f"feedback: label of {item.id[:40]!r} is not a finite number")
        out.append((item.id, item.label))
    return out


def answer_feedback(
    store: FeedbackStore, model: str, body: bytes, current_version: int
) -> tuple[int, dict[str, Any]]:
    """The HTTP answer to a feedback body: 200 with the counts, 413 for too many labels,
    400 for a malformed body, 503 when the store cannot record (never a 500)."""
    try:
        labels = parse_labels(body)
    except ModelfleetError as exc:
        return (413 if exc.code == "too_many_labels" else 400), {"error": exc.message}
    try:
        result = store.join(model, labels, current_version)
    except ModelfleetError as exc:
        log.warning("feedback for %s not joined: %s", model, exc.message)
        return 503, {"error": f"feedback not recorded: {exc.message}"}
    return 200, {**result.to_dict(), "max_labels": MAX_LABELS}


def predictions_of(outputs: Mapping[str, np.ndarray[Any, Any]]) -> list[tuple[Kind, str]] | None:
    """One ``(kind, prediction as text)`` per row of a response, or None when the outputs
    say neither class nor value (nothing is remembered then)."""
    if not outputs:
        return None
    chosen = outputs.get("label")
    if chosen is None:
        chosen = next((a for a in outputs.values() if np.asarray(a).dtype.kind in "iuOSUb"), None)
    if chosen is not None:
        data = np.asarray(chosen)
        rows = data.reshape(data.shape[0], -1) if data.ndim else data.reshape(1, 1)
        if rows.shape[1] != 1:
            return None
        return [("classifier", _class_text(v)) for v in rows[:, 0].tolist()]
    data = np.asarray(next(iter(outputs.values())))
    if data.dtype.kind != "f":
        return None
    rows = data.reshape(data.shape[0], -1) if data.ndim else data.reshape(1, 1)
    if rows.shape[1] == 1:
        return [("regressor", repr(float(v))) for v in rows[:, 0].tolist()]
    if rows.shape[1] == 0:
        return None
    return [("classifier", str(int(i))) for i in np.argmax(rows, axis=1).tolist()]


def _class_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class FeedbackStore:
    """Remembered predictions of every model at this site and the join of labels."""

    def __init__(
        self,
        path: Path,
        sink: CountsSink,
        *,
        window_s: float = 86_400.0,
        max_per_model: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_s <= 0 or max_per_model < 1:
            raise ValueError("window_s must be positive and max_per_model at least 1")
        self.path = path
        self.window_s = window_s
        self.max_per_model = max_per_model
        self._sink = sink
        self._clock = clock
        self._buffer: deque[tuple[str, str, int, str, str, float]] = deque(maxlen=MAX_BUFFERED)
        self._buffer_lock = threading.Lock()
        self._db_lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                self._db.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the feedback store {path}: {exc}") from exc
        self._loop = BackgroundLoop(
            "feedback-flush", self._flush_step, interval_s=1.0, logger=log, join_timeout_s=5.0
        )

    # --- hot path ------------------------------------------------------------------------

    def remember(
        self,
        model: str,
        version: int,
        request_id: str,
        outputs: Mapping[str, np.ndarray[Any, Any]] | None,
    ) -> None:
        """Note the predictions of one answered request; never raises into the request.

        A request of one row is remembered under its id; a request of k > 1 rows under
        ``{id}/0`` ... ``{id}/{k-1}``, so each row can be labelled.
        """
        if not outputs or len(request_id) > MAX_ID_LEN:
            return
        try:
            rows = predictions_of(outputs)
        except (ValueError, TypeError, IndexError):
            return
        if not rows:
            return
        now = self._clock()
        single = len(rows) == 1
        with self._buffer_lock:
            for index, (kind, value) in enumerate(rows):
                rid = request_id if single else f"{request_id}/{index}"
                self._buffer.append((model, rid, version, kind, value, now))

    # --- persistence ---------------------------------------------------------------------

    def flush(self) -> int:
        """Write the buffered predictions and apply the bounds; returns how many."""
        with self._buffer_lock:
            pending = list(self._buffer)
            self._buffer.clear()
        with self._db_lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if pending:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO predictions "
                        "(model, id, version, kind, predicted, at) VALUES (?, ?, ?, ?, ?, ?)",
                        pending,
                    )
                    for model in {p[0] for p in pending}:
                        self._db.execute(
                            "DELETE FROM predictions WHERE model = ? AND seq <= ("
                            " SELECT seq FROM predictions WHERE model = ?"
                            " ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                            (model, model, self.max_per_model),
                        )
                horizon = self._clock() - 2 * self.window_s
                self._db.execute("DELETE FROM predictions WHERE at < ?", (horizon,))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise StoreError(f"feedback store {self.path}: {exc}") from exc
        return len(pending)

    def remembered(self, model: str) -> int:
        """Predictions of ``model`` held for a label (written or still buffered)."""
        self.flush()
        with self._db_lock:
            (count,) = self._db.execute(
                "SELECT COUNT(*) FROM predictions WHERE model = ?", (model,)
            ).fetchone()
        return int(count)

    # --- the join ------------------------------------------------------------------------

    def join(
        self, model: str, labels: Sequence[tuple[str, Label]], current_version: int
    ) -> JoinResult:
        """Count each label against its prediction and hand the counts to the sink.

        Drops that name no version (``unknown_id``) are counted against
        ``current_version``, the version the site serves now.
        """
        if len(labels) > MAX_LABELS:
            raise InvalidInput(f"at most {MAX_LABELS} labels per call", code="too_many_labels")
        self.flush()
        now = self._clock()
        per_version: dict[int, FeedbackCounts] = {}
        accepted = 0
        dropped = dict.fromkeys(DROP_REASONS, 0)
        seen: set[str] = set()

        def counts(version: int) -> FeedbackCounts:
            return per_version.setdefault(version, FeedbackCounts())

        with self._db_lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for rid, label in labels:
                    row = self._db.execute(
                        "SELECT version, kind, predicted, at, labelled FROM predictions "
                        "WHERE model = ? AND id = ?",
                        (model, rid),
                    ).fetchone()
                    reason = None
                    if row is None:
                        reason, version = "unknown_id", current_version
                    else:
                        version, kind, predicted, at, labelled = row
                        if labelled or rid in seen:
                            reason = "duplicate"
                        elif now - float(at) > self.window_s:
                            reason = "expired"
                        elif not _count(counts(version), kind, predicted, label):
                            reason = "bad_label"
                    if reason is not None:
                        dropped[reason] += 1
                        counts(version).drop(reason)
                        continue
                    seen.add(rid)
                    accepted += 1
                    self._db.execute(
                        "UPDATE predictions SET labelled = 1 WHERE model = ? AND id = ?",
                        (model, rid),
                    )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise StoreError(f"feedback store {self.path}: {exc}") from exc
        for version, found in sorted(per_version.items()):
            try:
                self._sink(model, version, found)
            except Exception:  # counted at the site; shipping is the recorder's business
                log.exception("feedback counts of %s:%s not recorded", model, version)
        return JoinResult(accepted, dropped)

    # --- lifecycle -----------------------------------------------------------------------

    def _flush_step(self) -> None:
        self.flush()

    def start(self) -> None:
        self._loop.start()

    def close(self) -> None:
        """Stop the writer, write what is buffered, close the file."""
        self._loop.stop()
        try:
            self.flush()
        finally:
            with self._db_lock:
                self._db.close()


def _count(counts: FeedbackCounts, kind: str, predicted: str, label: Label) -> bool:
    """Add one joined label to ``counts``; False when the label does not fit the kind."""
    if kind == "regressor":
        if isinstance(label, str):
            return False
        error = float(label) - float(predicted)
        counts.kind = "regressor"
        counts.labels += 1
        counts.abs_error_sum += abs(error)
        counts.squared_error_sum += error * error
        return True
    truth = _class_text(label)
    cell = (truth, predicted)
    if cell not in counts.confusion and len(counts.confusion) >= MAX_CLASSES:
        return False
    if len(truth) > MAX_ID_LEN:
        return False
    counts.kind = "classifier"
    counts.labels += 1
    counts.confusion[cell] = counts.confusion.get(cell, 0) + 1
    return True
