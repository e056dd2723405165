"""The site's evaluation worker: score model versions on local labelled data, send counts.

The hub asks (an evaluation task names a model, two to eight versions with their signed
manifests, the metric and the data set); the site decides. Every task is checked against
the site's own config first — the same ``federation:`` consent and data sets federated
learning uses — then, per version: the manifest's signature against the keys the site
pinned, the site's residency policy, the blob's sha256 (from the reconciler's cache if it
holds an intact copy, else downloaded for this evaluation only), and only then is the
model loaded into onnxruntime. It runs on the chosen rows (the data set's hold-out, or
the whole file), at most ``max_rows`` of them, and two numbers per version leave the
site: the row count and the sum of correct predictions (accuracy) or of absolute errors
(MAE). For balanced accuracy also, per true class (at most ``MAX_CLASSES``), the rows of
that class and how many of them were predicted as it: class names are label values, the
model's vocabulary, as in feedback's confusion counts. Never a row, a prediction or a
label. A site with fewer rows than the task's ``min_samples`` refuses: a count over a
handful of rows says too much about each.

Answers are retried until the evaluation's deadline while the hub is unreachable (the
hub keeps one answer per site).
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from modelfleet.api.evaluations import CLASSIFICATION, MAX_CLASSES, EvaluationTask, TaskVersion
from modelfleet.errors import HubUnreachable, InvalidInput, ModelfleetError, NotFound
from modelfleet.loops import BackgroundLoop, Backoff
from modelfleet.registry.keyset import KeySet
from modelfleet.registry.manifest import verify_manifest
from modelfleet.site.cache import BlobCache
from modelfleet.site.federated import SiteConfig
from modelfleet.site.policy import enforce_site_policy
from modelfleet.site.runtime import LoadedModel
from modelfleet.site.trainer import DatasetCache, DatasetConfig, describe_error, read_table
from modelfleet.transport.session import HubSession, poll_timeout

log = logging.getLogger("modelfleet.site.evaluation")

#: Evaluation ids as the hub makes them; anything else is never put into a request path.
EVALUATION_ID = re.compile(r"^ev-[0-9a-f]{8}$")
#: Rows per onnxruntime call: bounds the memory one batch of outputs takes.
BATCH_ROWS = 8192
REMEMBERED = 1024

Download = Callable[[str, Path, int], None]


@dataclass(frozen=True)
class Counts:
    """What one version's evaluation sends: rows evaluated and correct (or |error|) sum;
    for balanced accuracy, per true class ``(right, rows)``."""

    count: int
    total: float
    classes: dict[str, tuple[int, int]] | None = None

    def wire(self) -> dict[str, Any]:
        """The answer's JSON for this version (``classes`` only when there are some)."""
        body: dict[str, Any] = {"count": self.count, "total": self.total}
        if self.classes is not None:
            body["classes"] = {name: list(pair) for name, pair in self.classes.items()}
        return body


@dataclass(frozen=True)
class Outcome:
    """What the worker did with a task: ``result``, ``refusal`` or ``skipped``."""

    kind: str
    detail: str = ""


class Refused(Exception):
    """This site will not (or cannot) evaluate the task; the message is the reason.

    Private to this module (caught below and told to the hub as a refusal), so not one of
    the package's public errors in ``modelfleet.errors``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EvaluationWorker:
    """One daemon thread that follows the hub's evaluation tasks for this site."""

    def __init__(
        self,
        config: SiteConfig,
        *,
        site: str,
        session: HubSession,
        download: Download,
        keys: Callable[[], KeySet],
        served: BlobCache,
        cache_dir: Path,
        policy_file: Path | None = None,
        max_rows: int = 100_000,
        poll_s: float = 20.0,
        retry_max_s: float = 30.0,
    ) -> None:
        """``download``: the reconciler's resumable blob download; ``keys``: the signing
        keys the site trusts now; ``served``: the reconciler's blob cache (read only);
        ``cache_dir``: this worker's own cache for versions the site does not serve."""
        self.config = config
        self.site = site
        self.session = session
        self.download = download
        self.keys = keys
        self.served = served
        self.cache = BlobCache(cache_dir)
        self.policy_file = policy_file
        self.max_rows = max_rows
        self.poll_s = poll_s
        self.datasets = DatasetCache(config.datasets)
        self._timeout = poll_timeout(poll_s, connect_s=30.0)
        self._backoff = Backoff(0.5, retry_max_s, max_doublings=7)
        self._failures = 0
        self._answered: OrderedDict[str, Outcome] = OrderedDict()
        self._loop = BackgroundLoop(
            "evaluation-worker",
            self._step,
            interval_s=0.0,
            logger=log,
            failure_message="evaluation worker failed",
            join_timeout_s=1.0,
        )

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def outcome(self, evaluation_id: str) -> Outcome | None:
        """What this worker did with an evaluation (None: not seen, or forgotten)."""
        return self._answered.get(evaluation_id)

    # --- loop -----------------------------------------------------------------------

    def _step(self) -> float:
        if not self.config.federation.participate:
            # The hub never selects a site whose declared consent says no (the federated
            # worker declares it): nothing to poll for.
            return 60.0
        try:
            response = self.session.request(
                "GET",
                f"/api/v1/evaluations/sites/{self.site}/tasks",
                params={"wait": self.poll_s},
                timeout=self._timeout,
            )
            tasks = response.json().get("tasks", [])
        except ModelfleetError as exc:
            if self._loop.stopping:
                return 0.0
            self._failures += 1
            log.debug("evaluation tasks: %s", exc.message)
            return self._backoff.delay(self._failures)
        self._failures = 0
        fresh = False
        for raw in tasks if isinstance(tasks, list) else []:
            if self._loop.stopping:
                return 0.0
            fresh |= self.handle(raw).detail != "already answered"
        return 0.25 if tasks and not fresh else 0.0

    def handle(self, raw: Any) -> Outcome:
        """Evaluate (or refuse) one task and deliver the answer."""
        try:
            task = EvaluationTask.model_validate(raw)
        except ValidationError:
            log.warning("evaluation task that does not parse ignored")
            return Outcome("skipped", "invalid task")
        if not EVALUATION_ID.fullmatch(task.evaluation):
            return Outcome("skipped", "invalid evaluation id")
        if task.evaluation in self._answered:
            return Outcome("skipped", "already answered")
        try:
            counts = self.evaluate(task)
        except (Refused, ModelfleetError) as exc:  # refused, or a download or load failed
            return self._deliver(task, refusal=exc.message)
        except Exception as exc:  # one task's failure, whatever it is, is only its own
            log.exception("evaluation %s failed", task.evaluation)
            return self._deliver(task, refusal=f"evaluation failed: {describe_error(exc)}")
        finally:
            self.cache.gc(set())  # this worker's copies are for one task only
        return self._deliver(task, counts=counts)

    # --- the work ---------------------------------------------------------------------

    def check(self, task: EvaluationTask) -> str:
        """The data set this task may use here; ``Refused`` with the reason otherwise."""
        fed = self.config.federation
        if not fed.participate:
            raise Refused(
                "site config refuses fleet learning" + (f": {fed.reason}" if fed.reason else "")
            )
        if not any(fnmatch.fnmatchcase(task.model, p) for p in fed.models):
            raise Refused(f"site config does not allow model {task.model!r}")
        allowed = self.config.allowed_datasets()
        if task.data is None:
            if len(allowed) != 1:
                raise Refused(f"site has {len(allowed)} data sets open; the task must name one")
            return allowed[0]
        if task.data not in allowed:
            raise Refused(f"site has no data set {task.data!r} open to fleet learning")
        return task.data

    def rows(self, task: EvaluationTask, name: str) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """Features and labels the task evaluates on: the chosen part, capped."""
        config = self.config.datasets[name]
        try:
            if task.metric in CLASSIFICATION:
                data = self.datasets.get(name)
                x, y, x_eval, y_eval = data.x, data.y, data.x_eval, data.y_eval
            else:  # MAE: real-valued labels, read without the classifier's label check
                x, y, x_eval, y_eval = real_valued(name, config)
        except ModelfleetError as exc:
            raise Refused(f"data set {name!r} unusable: {exc.message}") from exc
        if task.rows == "holdout" and config.eval_fraction > 0:
            x, y = x_eval, y_eval
        else:
            x, y = np.concatenate([x, x_eval]), np.concatenate([y, y_eval])
        x, y = x[: self.max_rows], y[: self.max_rows]
        if len(y) < task.min_samples:
            part = "hold-out" if task.rows == "holdout" else "file"
            raise Refused(
                f"data set {name!r} has {len(y)} labelled rows in its {part}; "
                f"the evaluation needs at least {task.min_samples}"
            )
        return x, y

    def evaluate(self, task: EvaluationTask) -> dict[int, Counts]:
        name = self.check(task)
        x, y = self.rows(task, name)
        present = np.unique(y) if task.metric == "balanced_accuracy" else np.zeros(0)
        if len(present) > MAX_CLASSES:
            raise Refused(
                f"data set {name!r} has {len(present)} classes; balanced accuracy is "
                f"reported for at most {MAX_CLASSES}"
            )
        counts: dict[int, Counts] = {}
        for version in task.versions:
            model = self.load(task, version)
            predicted = predict(model, x, task.metric)
            classes = None
            if task.metric in CLASSIFICATION:
                hit = predicted.astype(np.int64) == y
                total = float(np.count_nonzero(hit))
                if task.metric == "balanced_accuracy":
                    classes = per_class(y, hit, present)
            else:
                total = float(np.abs(predicted.astype(np.float64) - y).sum())
            if not np.isfinite(total):
                raise Refused(f"{task.model}:{version.version} gives non-finite predictions")
            counts[version.version] = Counts(len(y), total, classes)
        log.info("evaluation %s: %s on %d rows of %r", task.evaluation, task.metric, len(y), name)
        return counts

    def load(self, task: EvaluationTask, version: TaskVersion) -> LoadedModel:
        """Verify, fetch and load one version: nothing unverified is ever read as a model."""
        what = f"{task.model}:{version.version}"
        try:
            manifest = verify_manifest(version.manifest, version.signature, self.keys())
        except ModelfleetError as exc:
            raise Refused(f"{what}: {exc.message}") from exc
        if (manifest.get("name"), manifest.get("version")) != (task.model, version.version):
            raise Refused(f"{what}: the manifest describes another version")
        digest = str(manifest["digest"]).removeprefix("sha256:")
        size = int(manifest["size"])
        try:
            enforce_site_policy(self.policy_file, manifest)
        except ModelfleetError as exc:
            raise Refused(f"policy: {exc.message}") from exc
        path = self._blob(task, digest, size)
        return LoadedModel.load(path, name=task.model, version=version.version, digest=digest)

    def _blob(self, task: EvaluationTask, digest: str, size: int) -> Path:
        if self.served.has(digest) and self.served.intact(digest, size):
            return self.served.path(digest)
        if not (self.cache.has(digest) and self.cache.intact(digest, size)):
            self.download(
                f"/api/v1/evaluations/{task.evaluation}/blobs/{digest}",
                self.cache.partial_path(digest),
                size,
            )
            self.cache.commit(digest, size)  # DigestMismatch on bad bytes
        return self.cache.path(digest)

    # --- answers ----------------------------------------------------------------------

    def _deliver(
        self,
        task: EvaluationTask,
        *,
        counts: dict[int, Counts] | None = None,
        refusal: str | None = None,
    ) -> Outcome:
        base = f"/api/v1/evaluations/{task.evaluation}"
        attempt = 0
        while not self._loop.stopping:
            try:
                if counts is not None:
                    body = {"scores": {str(v): c.wire() for v, c in counts.items()}}
                    self.session.request("POST", f"{base}/results", json=body)
                    outcome = Outcome("result", f"{len(counts)} version(s)")
                else:
                    reason = (refusal or "refused")[:2000]
                    self.session.request("POST", f"{base}/refusals", json={"reason": reason})
                    outcome = Outcome("refusal", reason)
                break
            except HubUnreachable as exc:
                attempt += 1
                if datetime.now(UTC) >= task.deadline_at:
                    outcome = Outcome("skipped", f"deadline passed while hub unreachable: {exc}")
                    break
                self._loop.sleep(self._backoff.ceiling(attempt))
            except ModelfleetError as exc:  # finished, not selected: nothing to retry
                outcome = Outcome("skipped", exc.message)
                break
        else:
            return Outcome("skipped", "stopping")
        self._answered[task.evaluation] = outcome
        while len(self._answered) > REMEMBERED:
            self._answered.popitem(last=False)
        log.info("evaluation %s: %s %s", task.evaluation, outcome.kind, outcome.detail)
        return outcome


def real_valued(
    name: str, config: DatasetConfig
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    """A regression data set: (x, y, x_eval, y_eval) with real-valued labels, split by
    the same rule as :func:`~modelfleet.site.trainer.load_dataset` (its seed and
    ``eval_fraction``), so "the hold-out" names the same rows for both kinds of model."""
    if not config.path.is_file():
        raise NotFound(f"data set {name!r}: no file {config.path}")
    columns, table = read_table(config.path)
    if config.label not in table:
        raise InvalidInput(f"data set {name!r} has no label column {config.label!r}")
    features = config.features or [c for c in columns if c != config.label]
    missing = [f for f in features if f not in table]
    if missing:
        raise InvalidInput(f"data set {name!r} lacks feature columns {missing}")
    x = np.stack([table[f] for f in features], axis=1).astype(np.float32)
    y = table[config.label]
    if not np.all(np.isfinite(y)):
        raise InvalidInput(f"data set {name!r}: labels must be finite numbers")
    order = np.random.default_rng(config.seed).permutation(len(y))
    n_eval = round(config.eval_fraction * len(y))
    ev, tr = np.sort(order[:n_eval]), np.sort(order[n_eval:])
    return x[tr], y[tr], x[ev], y[ev]


def per_class(
    y: npt.NDArray[Any], hit: npt.NDArray[Any], classes: npt.NDArray[Any]
) -> dict[str, tuple[int, int]]:
    """Per true class (named by its label value): rows predicted right, rows of it."""
    out: dict[str, tuple[int, int]] = {}
    for c in classes:
        mine = y == c
        out[str(int(c))] = (int(np.count_nonzero(hit & mine)), int(np.count_nonzero(mine)))
    return out


def predict(model: LoadedModel, x: npt.NDArray[Any], metric: str) -> npt.NDArray[Any]:
    """One prediction per row: the label (accuracy, balanced accuracy) or the value
    (mae), in batches."""
    inputs = model.inputs
    if len(inputs) != 1 or inputs[0].datatype not in ("FP32", "FP64"):
        raise Refused(f"{model} must take one float input to be evaluated on a table")
    spec = inputs[0]
    if len(spec.shape) != 2 or spec.shape[1] not in (-1, x.shape[1]):
        raise Refused(f"{model} takes input shape {list(spec.shape)}; the data has {x.shape[1]}")
    dtype = np.float32 if spec.datatype == "FP32" else np.float64
    parts = []
    for start in range(0, len(x), BATCH_ROWS):
        outputs = model.run({spec.name: np.ascontiguousarray(x[start : start + BATCH_ROWS], dtype)})
        parts.append(_pick(model, outputs, metric, min(BATCH_ROWS, len(x) - start)))
    return np.concatenate(parts) if parts else np.zeros(0)


def _pick(
    model: LoadedModel, outputs: dict[str, npt.NDArray[Any]], metric: str, rows: int
) -> npt.NDArray[Any]:
    """The output that answers ``metric``: an integer label (or the argmax of class
    scores: at least two columns, so a regressor's one column is not taken for them) for
    the accuracies, the one real value per row for MAE."""
    ordered = [outputs[spec.name] for spec in model.outputs if spec.name in outputs]
    if metric in CLASSIFICATION:
        labels = outputs.get("label")
        if labels is None or labels.dtype.kind not in "iu":
            labels = next((o for o in ordered if o.dtype.kind in "iu"), None)
        if labels is not None and labels.size == rows:
            return labels.reshape(rows)
        scores = next(
            (o for o in ordered if o.dtype.kind == "f" and o.ndim == 2 and o.shape[1] > 1), None
        )
        if scores is not None and scores.shape[0] == rows:
            best: npt.NDArray[Any] = np.argmax(scores, axis=1)
            return best
        raise Refused(f"{model} has no label output to compute {metric} from")
    values = next((o for o in ordered if o.dtype.kind == "f"), None)
    if values is None or values.size != rows:
        raise Refused(f"{model} has no single real-valued output to compute MAE from")
    return values.reshape(rows)


__all__ = [
    "Counts",
    "EvaluationWorker",
    "Outcome",
    "Refused",
    "per_class",
    "predict",
    "real_valued",
]
