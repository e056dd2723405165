"""Pipelines: the closed loop as one persisted state machine per run.

A pipeline names a model, a federated job spec (``train``), how to evaluate its result on
held-out sites (``evaluate``) and whether to move the incumbent's alias when the result
wins (``promote``). A deployment following that alias (docs/deployments.md) then rolls the
new version out with its own strategy and gates: the pipeline stops at the alias.

A run's life::

    training    the federated job (id = the run's id) runs; its result gets the
                candidate alias
    evaluating  the evaluation (candidate vs. the version promote_alias named when it
                started, both pinned by number) runs on the held-out sites
    promoted    the candidate beat it by more than the margin: the alias moved
    kept        it did not (or promote is off, or someone moved the alias meanwhile):
                the alias is unchanged, the message has both scores
    failed      the job or the evaluation failed, or there was no incumbent (the rule:
                never promote without a comparison; set a first version by hand)

**Once, across replicas and restarts.** A run is claimed by inserting its row, its id
derived from what started it (``s-<schedule>-<slot>`` for a schedule's fire); the job's id
is the run's, and the coordinator answers an existing id with the existing job; every step
is a compare-and-set on the run's ``state``. The evaluation is started with the actor
``pipeline:<name>/<run>``, so a step that died between starting it and recording its id
finds and adopts it instead of starting a second. The alias move is idempotent (moving to
the version it already names tells nothing) and its event is keyed by the run. Only the
replica holding the ``pipelines`` lease advances runs (:class:`PipelineLoop`).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from typing import Any

from modelfleet.api.pipelines import Pipeline, PipelineIn, PipelineRun
from modelfleet.errors import Conflict, InvalidInput, ModelfleetError, NotFound
from modelfleet.federation.jobs import JOB_ID
from modelfleet.hub.aliases import move_alias
from modelfleet.hub.evaluations import EvaluationRecord, Evaluations, beats
from modelfleet.hub.events import Events
from modelfleet.hub.federation.coordinator import Coordinator
from modelfleet.hub.pipelines_checks import check_pipeline, config_of, job_config, run_view
from modelfleet.hub.registry import Registry
from modelfleet.hub.store import Store
from modelfleet.hub.store.records.pipelines import (
    ACTIVE_RUN_STATES,
    PipelineRecord,
    RunRecord,
)
from modelfleet.loops import BackgroundLoop
from modelfleet.refs import check_name

log = logging.getLogger("modelfleet.hub.pipelines")

MAX_PIPELINES = 500
#: Job states the coordinator is still working in.
_JOB_RUNNING = ("running", "finalizing")


def _score(record: EvaluationRecord, version: int | None) -> float | None:
    found = record.per_version.get(version) if version is not None else None
    return found.value if found is not None else None


def _fmt(value: float | None) -> str:
    return "no score" if value is None else f"{value:.4f}"


class Pipelines:
    """Pipelines (save, list, remove), their runs, and the step that advances a run."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        federation: Coordinator,
        evaluations: Evaluations,
        events: Events,
    ) -> None:
        self.store = store
        self.repo = store.pipelines
        self.registry = registry
        self.federation = federation
        self.evaluations = evaluations
        self.events = events

    # --- pipelines ----------------------------------------------------------------------

    def check(self, body: PipelineIn) -> dict[str, Any]:
        """:func:`check_pipeline` against this hub (a dry run's refusal)."""
        return check_pipeline(body, self.registry)

    def save(self, name: str, body: PipelineIn, actor: str) -> Pipeline:
        """Create or replace ``name``. Runs in flight keep the spec they started with."""
        check_name(name, "pipeline name")
        spec = check_pipeline(body, self.registry)
        existing = {p.name: p for p in self.repo.list_pipelines()}
        previous = existing.get(name)
        if previous is None and len(existing) >= MAX_PIPELINES:
            raise InvalidInput(f"at most {MAX_PIPELINES} pipelines; remove one first")
        now = self.store.now()
        record = self.repo.save_pipeline(
            PipelineRecord(
                name=name,
                model=body.model,
                spec=spec,
                created_by=previous.created_by if previous else actor,
                created_at=previous.created_at if previous else now,
                updated_at=now,
            )
        )
        return self._view(record)

    def get(self, name: str) -> Pipeline:
        return self._view(self.repo.get_pipeline(check_name(name, "pipeline name")))

    def list_pipelines(self) -> list[Pipeline]:
        return [self._view(p) for p in self.repo.list_pipelines()]

    def remove(self, name: str) -> None:
        """Remove the pipeline and its runs (a federated job a run started goes on; its
        result keeps the candidate alias, and nothing is promoted)."""
        self.repo.delete_pipeline(check_name(name, "pipeline name"))

    def _view(self, p: PipelineRecord) -> Pipeline:
        runs = self.repo.list_runs(p.name, limit=1)
        spec = PipelineIn.model_validate(p.spec)
        return Pipeline(
            name=p.name,
            model=p.model,
            train=spec.train,
            evaluate=spec.evaluate.model_dump(mode="json"),
            candidate_alias=spec.candidate_alias,
            promote_alias=spec.promote_alias,
            promote=spec.promote,
            description=spec.description,
            last_run=self._run_view(runs[0]) if runs else None,
            created_by=p.created_by,
            created_at=p.created_at,
            updated_at=p.updated_at,
        )

    # --- runs -----------------------------------------------------------------------------

    def start_run(self, name: str, *, actor: str, run_id: str | None = None) -> PipelineRun:
        """Start a run of ``name`` (or find the one of ``run_id``: a resumed fire starts no
        second run) and its federated job. Answers the run."""
        pipeline = self.repo.get_pipeline(check_name(name, "pipeline name"))
        run_id = run_id or f"p-{name[:40]}-{secrets.token_hex(4)}"
        if not JOB_ID.fullmatch(run_id):
            raise InvalidInput(f"invalid run id {run_id!r}: 1-64 letters, digits, '.', '_', '-'")
        now = self.store.now()
        run, created = self.repo.create_run(
            RunRecord(
                id=run_id,
                pipeline=name,
                model=pipeline.model,
                spec=pipeline.spec,
                state="training",
                started_by=actor,
                job=run_id,
                candidate_version=None,
                production_version=None,
                evaluation=None,
                candidate_score=None,
                production_score=None,
                promoted_version=None,
                message=f"federated job {run_id} starting",
                started_at=now,
                updated_at=now,
                finished_at=None,
            )
        )
        if run.pipeline != name:
            raise Conflict(f"run {run_id!r} belongs to pipeline {run.pipeline!r}")
        if created:
            log.info("pipeline %s: run %s started by %s", name, run_id, actor)
            self._emit("pipeline.started", run, {"started_by": actor})
        if run.state == "training":
            self._ensure_job(run)
        return self._run_view(self.repo.get_run(run.id))

    def runs(self, name: str, limit: int = 100) -> list[PipelineRun]:
        self.repo.get_pipeline(check_name(name, "pipeline name"))  # NotFound if unknown
        return [self._run_view(r) for r in self.repo.list_runs(name, limit=limit)]

    def get_run(self, name: str, run_id: str) -> PipelineRun:
        run = self.repo.get_run(run_id)
        if run.pipeline != name:
            raise NotFound(f"pipeline {name!r} has no run {run_id!r}")
        return self._run_view(run)

    def _run_view(self, run: RunRecord) -> PipelineRun:
        metric = (run.spec.get("evaluate") or {}).get("metric")
        if run.evaluation is not None and metric is None:
            try:
                metric = self.evaluations.get(run.evaluation).metric
            except NotFound:
                metric = None
        return run_view(run, metric)

    # --- the state machine ------------------------------------------------------------------

    def run_pass(self) -> None:
        """Advance every unfinished run by what is due (the loop calls this). One run's
        failure does not stop the others."""
        for run in self.repo.list_runs(states=ACTIVE_RUN_STATES, limit=1000):
            try:
                self.advance(run.id)
            except ModelfleetError as exc:
                log.warning("pipeline run %s not advanced: %s", run.id, exc.message)

    def advance(self, run_id: str) -> None:
        """Take the run's next step if it is due; idempotent."""
        run = self.repo.get_run(run_id)
        if run.state == "training":
            self._training(run)
        elif run.state == "evaluating":
            self._evaluating(run)

    def _spec(self, run: RunRecord) -> PipelineIn:
        return PipelineIn.model_validate(run.spec)  # the spec the run started with

    def _ensure_job(self, run: RunRecord) -> bool:
        """Start the run's job unless it exists; False when it could not be (run failed)."""
        with contextlib.suppress(NotFound):  # not started yet: start it below
            self.federation.job(run.job)
            return True
        spec = self._spec(run)
        try:
            config = job_config(spec.train, run.job, spec.candidate_alias)
            job = self.federation.start_job(config, f"pipeline:{run.pipeline}")
        except ModelfleetError as exc:
            # Two starters at once (the request that made the run and the loop's pass):
            # the loser's insert is refused, and the job the winner made is the run's.
            with contextlib.suppress(NotFound):
                if self.federation.job(run.job).config == config_of(spec, run.job):
                    return True
            self._finish(run, "failed", f"federated job not started: {exc.message}")
            return False
        log.info("pipeline run %s: federated job %s %s", run.id, job.id, job.state)
        return True

    def _training(self, run: RunRecord) -> None:
        if not self._ensure_job(run):
            return
        job = self.federation.job(run.job)
        if job.state in _JOB_RUNNING:
            return
        if job.state != "completed" or job.result_version is None:
            self._finish(run, "failed", f"federated job {job.id} {job.state}: {job.message}")
            return
        spec = self._spec(run)
        candidate = job.result_version
        incumbent = self.store.models.resolve_alias(run.model, spec.promote_alias)
        if incumbent is None:
            self._finish(
                run,
                "failed",
                f"no {run.model}@{spec.promote_alias} to compare {run.model}:{candidate} "
                f"with: a pipeline never promotes without a comparison; point "
                f"{spec.promote_alias} at a first version by hand",
                candidate_version=candidate,
            )
            return
        if incumbent == candidate:
            self._finish(
                run,
                "kept",
                f"{run.model}:{candidate} is already {spec.promote_alias}",
                candidate_version=candidate,
                production_version=incumbent,
            )
            return
        try:
            evaluation = self._evaluation(run, spec, candidate, incumbent)
        except ModelfleetError as exc:
            self._finish(
                run,
                "failed",
                f"evaluation not started: {exc.message}",
                candidate_version=candidate,
                production_version=incumbent,
            )
            return
        if self.repo.transition(
            run.id,
            "training",
            "evaluating",
            candidate_version=candidate,
            production_version=incumbent,
            evaluation=evaluation.id,
            message=f"evaluation {evaluation.id}: {run.model}:{candidate} "
            f"({spec.candidate_alias}) vs {run.model}:{incumbent} ({spec.promote_alias}) "
            f"at {spec.evaluate.selector}",
        ):
            log.info("pipeline run %s: evaluation %s", run.id, evaluation.id)

    def _evaluation(
        self, run: RunRecord, spec: PipelineIn, candidate: int, incumbent: int
    ) -> EvaluationRecord:
        """The run's evaluation: the one a step that died before recording it started
        (found by its actor), else a new one."""
        actor = f"pipeline:{run.pipeline}/{run.id}"[:255]
        for found in self.evaluations.list(model=run.model, limit=100):
            if found.created_by == actor and found.versions == [candidate, incumbent]:
                return found
        e = spec.evaluate
        return self.evaluations.start(
            run.model,
            [str(candidate), str(incumbent)],
            e.selector,
            actor=actor,
            min_samples=e.min_samples,
            metric=e.metric,
            data=e.data,
            rows=e.rows,
            deadline_s=e.deadline_s,
        )

    def _evaluating(self, run: RunRecord) -> None:
        evaluation_id, candidate, incumbent = (
            run.evaluation,
            run.candidate_version,
            run.production_version,
        )
        if evaluation_id is None or candidate is None or incumbent is None:
            self._finish(run, "failed", "the run lost its evaluation (a store inconsistency)")
            return
        record = self.evaluations.get(evaluation_id)
        if record.state == "running":
            return
        c, p = _score(record, candidate), _score(record, incumbent)
        scores = {"candidate_score": c, "production_score": p}
        if record.state != "completed":
            self._finish(run, "failed", f"evaluation {record.id} {record.state}: {record.message}",
                         **scores)  # fmt: skip
            return
        spec = self._spec(run)
        versus = (
            f"{run.model}:{candidate} {record.metric} {_fmt(c)} vs {spec.promote_alias} "
            f"{run.model}:{incumbent} {_fmt(p)}"
        )
        if not beats(record, candidate, incumbent, spec.evaluate.margin):
            self._finish(
                run, "kept", f"{versus}: does not beat it by more than {spec.evaluate.margin:g}; "
                f"{spec.promote_alias} unchanged", **scores,
            )  # fmt: skip
            return
        if not spec.promote:
            self._finish(run, "kept", f"{versus}: beats it; promote is off, alias unchanged",
                         **scores)  # fmt: skip
            return
        current = self.store.models.resolve_alias(run.model, spec.promote_alias)
        if current not in (incumbent, candidate):
            self._finish(
                run, "kept", f"{versus}: beats it, but {spec.promote_alias} was moved to "
                f"{run.model}:{current} meanwhile; not moved over that", **scores,
            )  # fmt: skip
            return
        move_alias(
            self.store, self.registry, run.model, spec.promote_alias, candidate,
            f"pipeline:{run.pipeline}", before=incumbent, key=f"pipeline/{run.id}/alias",
        )  # fmt: skip
        self._finish(
            run, "promoted", f"{versus}: beats it; {spec.promote_alias} moved to "
            f"{run.model}:{candidate}", promoted_version=candidate, **scores,
        )  # fmt: skip

    def _finish(self, run: RunRecord, state: str, message: str, **values: Any) -> None:
        """The compare-and-set to an end state, told once as ``pipeline.<state>``."""
        if not self.repo.transition(
            run.id, run.state, state, message=message[:2000], finished_at=self.store.now(),
            **values,
        ):  # fmt: skip
            return  # another replica or an earlier attempt took the step
        log.info("pipeline run %s %s: %s", run.id, state, message)
        self._emit(f"pipeline.{state}", self.repo.get_run(run.id), {})

    def _emit(self, type: str, run: RunRecord, extra: dict[str, Any]) -> None:
        state = type.split(".", 1)[1]
        payload = {
            "pipeline": run.pipeline,
            "run": run.id,
            "model": run.model,
            "state": run.state,
            "job": run.job,
            "candidate_version": run.candidate_version,
            "production_version": run.production_version,
            "evaluation": run.evaluation,
            "scores": {"candidate": run.candidate_score, "production": run.production_score},
            "promoted_version": run.promoted_version,
            "message": run.message,
            **extra,
        }
        self.events.emit(type, run.pipeline, payload, key=f"pipeline/{run.id}/{state}")


class PipelineLoop:
    """Advances the runs in a daemon thread, on the replica holding the ``pipelines``
    lease (always the one hub on SQLite; one replica on PostgreSQL, by advisory lock)."""

    def __init__(self, store: Store, pipelines: Pipelines, *, interval_s: float) -> None:
        self.pipelines = pipelines
        self.lease = store.leadership("pipelines")
        self._loop = BackgroundLoop(
            "pipelines",
            self._step,
            interval_s=interval_s,
            logger=log,
            failure_message="pipeline pass failed",
        )

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
        self.lease.release()

    def _step(self) -> None:
        if self.lease.poll():
            self.pipelines.run_pass()
