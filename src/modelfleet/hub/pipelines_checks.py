"""What a pipeline is checked against, and a run as the API shows it: pure functions of
the pipeline service (hub/pipelines.py), kept apart so that module holds the state machine.
"""

from __future__ import annotations

from typing import Any

from modelfleet.api.pipelines import PipelineIn, PipelineRun, RunScores
from modelfleet.errors import InvalidInput, ModelfleetError, NotFound
from modelfleet.federation.jobs import JobConfig
from modelfleet.hub.registry import Registry
from modelfleet.hub.selectors import parse_selector
from modelfleet.hub.store.records.pipelines import RunRecord
from modelfleet.refs import check_alias, check_name, parse_ref


def check_pipeline(body: PipelineIn, registry: Registry) -> dict[str, Any]:
    """The spec to store, after the checks that need the hub's state.

    ``NotFound`` for an unknown model; ``InvalidInput`` naming the fault for a job spec
    the FL API would refuse, one on another model, one naming an ``id`` or another alias,
    a selector that does not parse, or the same alias twice.
    """
    model = check_name(body.model, "model name")
    registry.model(model)  # NotFound: "model 'x' does not exist"
    check_alias(body.candidate_alias)
    check_alias(body.promote_alias)
    if body.candidate_alias == body.promote_alias:
        raise InvalidInput(
            f"candidate_alias and promote_alias are both {body.promote_alias!r}: the "
            "candidate must be compared with another version"
        )
    if "id" in body.train:
        raise InvalidInput("a pipeline's job spec must not name an id: each run gets its own")
    alias = body.train.get("alias")
    if alias is not None and alias != body.candidate_alias:
        raise InvalidInput(
            f"the job spec's alias {alias!r} differs from candidate_alias "
            f"{body.candidate_alias!r}: set candidate_alias instead"
        )
    config = job_config(body.train, "check", body.candidate_alias)
    ref = parse_ref(config.model)
    if ref.name != model or (config.result_model not in (None, model)):
        raise InvalidInput(
            f"the job spec trains {config.result_model or ref.name!r}, not the pipeline's "
            f"model {model!r}"
        )
    try:
        registry.resolve(ref)
    except NotFound as exc:
        raise InvalidInput(f"unknown model in the job spec: {exc.message}") from exc
    parse_selector(body.evaluate.selector)
    if body.evaluate.data is not None:
        check_name(body.evaluate.data, "data set name")
    return body.model_dump(mode="json")


def job_config(train: dict[str, Any], job_id: str, alias: str) -> JobConfig:
    """The run's federated job: the stored spec with the run's id and the candidate alias
    (deterministic, so the coordinator recognises a resumed start as the same job)."""
    return JobConfig.parse({**train, "id": job_id, "alias": alias})


def config_of(spec: PipelineIn, job_id: str) -> dict[str, Any] | None:
    """The job's stored configuration for this run (None if the spec no longer parses)."""
    try:
        return job_config(spec.train, job_id, spec.candidate_alias).model_dump(mode="json")
    except ModelfleetError:
        return None


def run_view(run: RunRecord, metric: str | None) -> PipelineRun:
    return PipelineRun(
        id=run.id,
        pipeline=run.pipeline,
        model=run.model,
        state=run.state,
        started_by=run.started_by,
        job=run.job,
        candidate_version=run.candidate_version,
        production_version=run.production_version,
        evaluation=run.evaluation,
        scores=RunScores(
            metric=metric, candidate=run.candidate_score, production=run.production_score
        ),
        promoted_version=run.promoted_version,
        message=run.message,
        started_at=run.started_at,
        updated_at=run.updated_at,
        finished_at=run.finished_at,
    )
