"""The site's federated-learning worker: consent, task pull, local training, update post.

The site's own config file decides everything: whether the site takes part at all, for
which models, on which data sets, with which trainers and how many rounds a day. The
worker declares that to the hub (so a refusing site is never sent a task and operators
see why), then dials out for tasks like the rest of the agent. Each task is checked
against the config again before any work — a task the config does not allow is refused
with a reason the hub shows — then the global weights are fetched, the trainer runs on
local data, and only the delta, the example count and metrics are posted. Posts are
retried until the round's deadline (at-least-once; the hub keeps one answer per site).
The hub holds an update post until the site's next task exists and answers with it, so
a busy site needs one request per round, not a post and a poll.
"""

from __future__ import annotations

import base64
import fnmatch
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelfleet.errors import HubUnreachable, InvalidInput, ModelfleetError
from modelfleet.federation import wire
from modelfleet.federation.jobs import JOB_ID
from modelfleet.federation.specs import ModelSpec, flatten, unflatten
from modelfleet.federation.training import TrainConfig
from modelfleet.loops import BackgroundLoop, Backoff
from modelfleet.site.trainer import (
    BUILTIN,
    BuiltinTrainer,
    DatasetCache,
    DatasetConfig,
    Trainer,
    check_fit,
    describe_error,
    load_trainer,
)
from modelfleet.transport.session import HubSession, poll_timeout
from modelfleet.yamlfile import load_yaml_file

log = logging.getLogger("modelfleet.site.federated")

DAY_S = 86400.0
#: How many answered tasks the worker remembers (to skip repeats) and keeps results of.
REMEMBERED_TASKS = 4096
ALREADY_ANSWERED = "already answered"


class FederationConfig(BaseModel):
    """The ``federation:`` section: this site's consent and limits."""

    model_config = ConfigDict(extra="forbid")

    participate: bool = Field(default=False, description="Take part in federated jobs at all.")
    reason: str = Field(default="", description="Shown to operators when not participating.")
    models: list[str] = Field(
        default_factory=lambda: ["*"], description="Model names (globs) the site may train."
    )
    datasets: list[str] | None = Field(
        default=None, description="Data sets jobs may use; default every configured one."
    )
    max_rounds_per_day: int | None = Field(default=None, ge=0)
    max_examples: int | None = Field(
        default=None,
        ge=1,
        le=1 << 40,
        description="Declared to the hub: the most examples this site's updates count for "
        "(bounds this site's weight in the global model whatever an update claims).",
    )


class SiteConfig(BaseModel):
    """The site's own YAML config file (``MODELFLEET_SITE_CONFIG_FILE``)."""

    model_config = ConfigDict(extra="forbid")

    datasets: dict[str, DatasetConfig] = Field(default_factory=dict)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    trainers: dict[str, str] = Field(
        default_factory=dict, description="Custom trainers: name -> 'package.module:Object'."
    )

    @classmethod
    def load(cls, path: Path) -> SiteConfig:
        raw = load_yaml_file(path, "site config")
        try:
            config = cls.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ()))
            raise InvalidInput(f"site config {path}: {where}: {err.get('msg')}") from exc
        # Relative data paths are relative to the config file, not the working directory.
        for ds in config.datasets.values():
            if not ds.path.is_absolute():
                ds.path = (path.parent / ds.path).resolve()
        return config

    def allowed_datasets(self) -> list[str]:
        names = self.federation.datasets
        return sorted(self.datasets if names is None else [n for n in names if n in self.datasets])


class RoundLedger:
    """Rounds trained in the last 24 h, kept in the state directory across restarts.

    One line per round appended to a log (a round costs a short append, not a rewrite
    of the day's history); a torn last line after a crash is ignored, and the log is
    compacted to the last day's rounds when it is opened.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._times: list[float] = []
        try:
            text = path.read_text()
        except OSError:
            text = ""
        complete = text[: text.rfind("\n") + 1]  # a crash mid-append leaves a torn tail
        for line in complete.splitlines():
            try:
                self._times.append(float(line))
            except ValueError:
                continue
        if self.today() != len(text.splitlines()):
            self._rewrite()

    def today(self, now: float | None = None) -> int:
        now = now or time.time()
        self._times = [t for t in self._times if now - t < DAY_S]
        return len(self._times)

    def record(self, now: float | None = None) -> None:
        stamp = now or time.time()
        self._times.append(stamp)
        with self.path.open("a") as log_file:
            log_file.write(f"{stamp!r}\n")

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(f"{t!r}\n" for t in self._times))
        os.replace(tmp, self.path)


@dataclass
class TaskResult:
    kind: str  # update | refusal | skipped
    detail: str = ""


class FederatedWorker:
    """One daemon thread that follows the hub's federated tasks for this site."""

    def __init__(
        self,
        config: SiteConfig,
        *,
        site: str,
        state_dir: Path,
        session: HubSession | None = None,
        hub_url: str | None = None,
        token: str | None = None,
        poll_s: float = 20.0,
        retry_max_s: float = 30.0,
    ) -> None:
        """``session``: the agent's shared hub session; or ``hub_url`` and ``token`` for a
        worker on its own (a session it owns and closes on :meth:`stop`)."""
        if (session is None) == (hub_url is None):
            raise InvalidInput("give the worker either a hub session or a hub URL")
        self._owns_session = session is None
        self.session = session if session is not None else HubSession(str(hub_url), token)
        # Task polls and update posts are held by the hub up to poll_s (long-polls).
        self._timeout = poll_timeout(poll_s, connect_s=30.0)
        self.config = config
        self.site = site
        self.poll_s = poll_s
        self.retry_max_s = retry_max_s
        self.ledger = RoundLedger(state_dir / "federated-rounds.log")
        self.datasets = DatasetCache(config.datasets)
        self.trainers: dict[str, Trainer] = {BUILTIN: BuiltinTrainer()}
        self._trainer_errors: dict[str, str] = {}
        for name, target in config.trainers.items():
            try:
                self.trainers[name] = load_trainer(target)
            except ModelfleetError as exc:
                self._trainer_errors[name] = exc.message
                log.warning("custom trainer %s not available: %s", name, exc.message)
        # It may sit in a task long-poll; it is a daemon and its only state (the round
        # ledger) is written atomically, so a short join on stop is enough.
        self._loop = BackgroundLoop(
            "fl-worker",
            self._step,
            interval_s=0.0,
            logger=log,
            failure_message="federated worker failed",
            join_timeout_s=1.0,
        )
        self._failures = 0
        # The hub unreachable or refusing: equal-jittered, 0.5 s doubling to retry_max_s.
        self._backoff = Backoff(0.5, retry_max_s, max_doublings=7)
        # An update or refusal not delivered: the bare ceiling, 0.5 s doubling 5 times.
        self._delivery_backoff = Backoff(0.5, retry_max_s, max_doublings=5)
        self._declared = False
        # Tasks answered lately (an ordered set, bounded: a long-lived site answers many).
        self._answered: dict[tuple[str, int, int], None] = {}
        # Tasks the hub sent back with the last update (it holds the post until the
        # next round opens); None: ask with a task poll.
        self._next_tasks: list[dict[str, Any]] | None = None
        self.results: deque[tuple[str, int, TaskResult]] = deque(maxlen=REMEMBERED_TASKS)

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
        if self._owns_session:
            self.session.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.session.request(method, path, timeout=self._timeout, **kwargs)

    # --- consent --------------------------------------------------------------------

    def declaration(self) -> dict[str, Any]:
        fed = self.config.federation
        reason = fed.reason
        if fed.participate and not self.config.allowed_datasets():
            reason = "no data set configured"
        return {
            "participate": fed.participate and bool(self.config.allowed_datasets()),
            "reason": reason,
            "models": fed.models,
            "datasets": self.config.allowed_datasets(),
            "trainers": sorted(self.trainers),
            "max_rounds_per_day": fed.max_rounds_per_day,
            "rounds_today": self.ledger.today(),
            "max_examples": fed.max_examples,
        }

    def declare(self) -> None:
        self._call("PUT", f"/api/v1/federation/sites/{self.site}/consent", json=self.declaration())
        self._declared = True

    # --- loop -----------------------------------------------------------------------

    def _step(self) -> float:
        """One pass of the loop (declare, pull tasks, answer them); answers the wait before
        the next pass: none while tasks flow, the long-poll itself being the wait."""
        try:
            if not self._declared:
                self.declare()
            if not self.config.federation.participate:
                # Nothing to pull: the declaration is all the hub needs. Re-declare
                # now and then in case the hub's database was replaced.
                self._declared = False
                return 60.0
            tasks = self._next_tasks
            self._next_tasks = None
            if tasks is None:
                response = self._call(
                    "GET",
                    f"/api/v1/federation/sites/{self.site}/tasks",
                    params={"wait": self.poll_s},
                )
                tasks = response.json().get("tasks", [])
            self._failures = 0
            fresh = False
            for task in tasks:
                if self._loop.stopping:
                    return 0.0
                fresh |= self.handle(task).detail != ALREADY_ANSWERED
            if tasks and not fresh:
                # Only tasks this site answered: the hub's view of open tasks lags
                # by up to its snapshot's lifetime; do not poll in a tight loop.
                return 0.25
            return 0.0
        except ModelfleetError as exc:
            self._failures += 1
            self._declared = False  # the hub may have restarted on an empty store
            log.debug("federated worker: %s", exc.message)
            return self._backoff.delay(self._failures)
        except Exception:  # keep the thread alive whatever one task does
            self._failures += 1
            log.exception("federated worker failed")
            return min(self.retry_max_s, 1.0 * self._failures)

    def check(self, task: dict[str, Any], spec: ModelSpec) -> str | None:
        """Why this site's config does not allow ``task``; None if it does."""
        fed = self.config.federation
        if not fed.participate:
            return "site config refuses federated jobs" + (f": {fed.reason}" if fed.reason else "")
        model = str(task.get("model", ""))
        if not any(fnmatch.fnmatchcase(model, p) for p in fed.models):
            return f"site config does not allow training model {model!r}"
        data = str(task.get("data", ""))
        if data not in self.config.allowed_datasets():
            return f"site has no data set {data!r} open to federated jobs"
        trainer = str(task.get("trainer", BUILTIN))
        if trainer not in self.trainers:
            extra = self._trainer_errors.get(trainer)
            return f"trainer {trainer!r} is not registered at this site" + (
                f" ({extra})" if extra else ""
            )
        if fed.max_rounds_per_day is not None and self.ledger.today() >= fed.max_rounds_per_day:
            return f"site reached its limit of {fed.max_rounds_per_day} federated rounds per day"
        try:
            dataset = self.datasets.get(data)
        except ModelfleetError as exc:
            return f"data set {data!r} unusable: {exc.message}"
        return check_fit(spec, dataset)

    def handle(self, task: dict[str, Any]) -> TaskResult:
        """Refuse or train one task and deliver the answer (retrying until its deadline)."""
        key = (str(task["job"]), int(task["round"]), int(task["attempt"]))
        if not JOB_ID.fullmatch(key[0]) or key[1] < 1:
            # Nowhere valid to answer: the paths below are built from these, never
            # taken from the task (a hub-given absolute URL would carry this site's
            # credential to another host).
            log.warning("federated task with an invalid job id or round ignored: %r", key[:2])
            return TaskResult("skipped", "invalid task: bad job id or round")
        if key in self._answered:
            return TaskResult("skipped", ALREADY_ANSWERED)
        try:
            spec = ModelSpec.parse(task["spec"])
            reason = self.check(task, spec)
        except ModelfleetError as exc:
            reason = f"invalid task: {exc.message}"
        if reason is not None:
            result = self._deliver(task, key, refusal=reason)
            if "limit" in reason:
                self._declared = False  # tell the hub, so it stops selecting this site
            return result
        weights = self._fetch_weights(task, spec)
        dataset = self.datasets.get(str(task["data"]))
        trainer = self.trainers[str(task.get("trainer", BUILTIN))]
        train = TrainConfig.model_validate(task.get("train", {}))
        try:
            metrics = dict(trainer.evaluate(spec, weights, dataset))
            fit = trainer.fit(spec, weights, dataset, train, int(task.get("seed", 0)))
            delta = flatten(spec, fit.weights) - flatten(spec, weights)
        except Exception as exc:
            return self._deliver(task, key, refusal=f"local training failed: {describe_error(exc)}")
        metrics.update(fit.metrics)
        if not np.isfinite(delta).all():
            return self._deliver(task, key, refusal="local training diverged (NaN or infinity)")
        self.ledger.record()
        body = wire.pack(
            {
                "attempt": key[2],
                "num_examples": int(fit.num_examples),
                "metrics": {k: float(v) for k, v in metrics.items() if np.isfinite(v)},
            },
            {"delta": delta.astype(np.float32)},
        )
        # What left the site, for its operator's log: counts, metrics, one delta.
        sent = (
            f"{fit.num_examples} examples of {task['data']!r} -> a delta of {delta.size} values "
            f"({len(body)} bytes) and metrics {', '.join(sorted(metrics))}"
        )
        return self._deliver(task, key, body=body, sent=sent)

    def _fetch_weights(self, task: dict[str, Any], spec: ModelSpec) -> dict[str, Any]:
        inline = task.get("weights")
        if isinstance(inline, str):  # small models come with the task
            _, arrays = wire.unpack(base64.b64decode(inline))
        else:
            _, arrays = wire.unpack(self._call("GET", f"{_round_path(task)}/weights").content)
        return unflatten(spec, arrays["weights"])

    def _deliver(
        self,
        task: dict[str, Any],
        key: tuple[str, int, int],
        *,
        body: bytes | None = None,
        refusal: str | None = None,
        sent: str = "",
    ) -> TaskResult:
        """Post the update (``body``, described by ``sent`` for the site's log) or the
        refusal, retrying while the hub is unreachable until the round's deadline."""
        deadline = _parse_time(task.get("deadline_at"))
        attempt = 0
        while not self._loop.stopping:
            try:
                if body is not None:
                    answer = self._call(
                        "POST",
                        f"{_round_path(task)}/updates",
                        params={"wait": self.poll_s},
                        content=body,
                        headers={"Content-Type": wire.MEDIA_TYPE},
                    ).json()
                    if isinstance(answer.get("tasks"), list) and answer["tasks"]:
                        self._next_tasks = answer["tasks"]
                    result = TaskResult("update")
                else:
                    self._call(
                        "POST",
                        f"{_round_path(task)}/refusals",
                        json={"attempt": key[2], "reason": refusal or "refused"},
                    )
                    result = TaskResult("refusal", refusal or "")
                break
            except HubUnreachable as exc:
                attempt += 1
                if deadline is not None and datetime.now(UTC) >= deadline:
                    result = TaskResult("skipped", f"deadline passed while hub unreachable: {exc}")
                    break
                self._loop.sleep(self._delivery_backoff.ceiling(attempt))
            except ModelfleetError as exc:  # round closed, not selected: nothing to retry
                result = TaskResult("skipped", exc.message)
                break
        else:
            return TaskResult("skipped", "stopping")
        self._answered[key] = None
        if len(self._answered) > REMEMBERED_TASKS:
            del self._answered[next(iter(self._answered))]
        self.results.append((key[0], key[1], result))
        where = f"federated job {key[0]} round {key[1]}"
        if result.kind == "update":
            log.info("%s: sent %s", where, sent)
        elif result.kind == "refusal":
            log.info("%s: refused: %s", where, result.detail)
        else:
            log.warning("%s: no answer delivered: %s", where, result.detail)
        return result


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _round_path(task: dict[str, Any]) -> str:
    """The hub path of a task's round, built here from its (checked) job id and number."""
    return f"/api/v1/federation/jobs/{task['job']}/rounds/{int(task['round'])}"
