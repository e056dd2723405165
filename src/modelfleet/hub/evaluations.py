"""Evaluations: which of two to eight versions of a model does best on the sites' own data.

The last step before the pipeline moves an alias ("if the candidate beats production on
the held-out sites"). The hub never sees a labelled row: it sends each selected site a
task naming the versions (with their signed manifests), the site verifies and runs them
on its local labelled data and returns two numbers per version — rows evaluated and the
sum of correct predictions (accuracy) or of absolute errors (MAE) — and, for balanced
accuracy, a pair of counts per true class (right, rows). The hub adds those up
(:mod:`modelfleet.hub.evaluation_scores`) and picks the winner.

An evaluation's life::

    running: sites chosen at the start (selector, consent, residency, online); the rest
             are recorded with the reason they were left out
             -> answers (counts or a refusal), one per site, idempotent
             -> every selected site answered, or the deadline passed:
    completed (at least one site returned counts; the silent ones are "missing")
    | failed (nobody returned counts, or no site could be selected)

Every transition is a compare-and-set in the store, and the deadline check runs from a
background loop that only the leading replica drives, so a restarted hub or a second
replica finishes each evaluation once; ``evaluation.completed`` / ``evaluation.failed``
events carry the evaluation's id as their key.
"""

from __future__ import annotations

import builtins
import fnmatch
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from modelfleet.api.evaluations import (
    CLASSIFICATION,
    MAX_VERSIONS,
    EvaluationIn,
    EvaluationResultIn,
    EvaluationTask,
    Metric,
    TaskVersion,
)
from modelfleet.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from modelfleet.federation.jobs import Consent
from modelfleet.hub.deployments import Deployments
from modelfleet.hub.evaluation_scores import (
    EvaluationRecord,
    beats,
    build_record,
    check_counts,
    winner,
)
from modelfleet.hub.events import Events
from modelfleet.hub.policy import check_residency
from modelfleet.hub.registry import Registry
from modelfleet.hub.selectors import parse_selector
from modelfleet.hub.sites import Sites
from modelfleet.hub.store import Store
from modelfleet.hub.store.records import AnswerRow, EvaluationRow, SiteRecord, VersionRecord
from modelfleet.hub.wakeups import Notifier
from modelfleet.loops import BackgroundLoop
from modelfleet.refs import ModelRef, check_alias, check_name

__all__ = ["EvaluationRecord", "Evaluations", "beats"]

log = logging.getLogger("modelfleet.evaluations")

FINISHED = ("completed", "failed")
#: How long one snapshot of the running evaluations serves the sites' task polls: every
#: idle poll of every site would otherwise query the store. Changes made in this process
#: drop it at once; the TTL bounds how late a change made by another replica is seen.
SNAPSHOT_TTL_S = 1.0

#: The running evaluations with the sites that answered each and the task body.
Snapshot = list[tuple[EvaluationRow, set[str], EvaluationTask]]


class Evaluations:
    """Evaluations on top of the store, the registry, the sites and their consents."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        sites: Sites,
        deployments: Deployments,
        consents: Callable[[], dict[str, dict[str, Any]]],
        *,
        events: Events | None = None,
        tick_s: float = 1.0,
    ) -> None:
        """``consents``: a callable giving each site's declared consent (the federation
        coordinator's ``consents``): a site uses its data for evaluations on the same
        terms it declared for federated learning."""
        self.repo = store.evaluations
        self.registry = registry
        self.sites = sites
        self.deployments = deployments
        self._consents = consents
        self.events = events
        #: Wakes a site's task long-poll when an evaluation selects it.
        self.bell = Notifier()
        self.lease = store.leadership("evaluations")
        self._snapshot: tuple[float, Snapshot] | None = None
        self._snapshot_lock = threading.Lock()
        self._loop = BackgroundLoop(
            "evaluations",
            self._tick_if_leader,
            interval_s=tick_s,
            logger=log,
            failure_message="evaluations tick failed",
        )

    # --- lifecycle ------------------------------------------------------------------

    def start_loop(self) -> None:
        """Run the deadline loop in a daemon thread (the hub's lifespan calls this)."""
        self._loop.start()

    def stop_loop(self) -> None:
        self._loop.stop()
        self.lease.release()

    def _tick_if_leader(self) -> None:
        if self.lease.poll():
            self.tick()

    def tick(self) -> None:
        """Finish every running evaluation that is due (all answered, or past deadline)."""
        for row in self.repo.list_evaluations(states=("running",), limit=1000):
            self.advance(row.id)

    # --- operators and the pipeline ---------------------------------------------------

    def start(
        self,
        model: str,
        versions: Sequence[str],
        selector: str,
        *,
        actor: str,
        min_samples: int = 20,
        metric: str | None = None,
        data: str | None = None,
        rows: str = "holdout",
        deadline_s: float = 600.0,
    ) -> EvaluationRecord:
        """Ask the sites ``selector`` matches to evaluate ``versions`` of ``model``.

        ``versions``: aliases (``candidate``, ``production``) or numbers, 2 to 8 distinct
        versions. Bad input raises ``InvalidInput`` (or ``NotFound`` for an unknown model,
        version or alias) naming what is wrong; nothing is stored then.
        """
        request = parse_request(
            {
                "model": model,
                "versions": list(versions),
                "selector": selector,
                "min_samples": min_samples,
                "metric": metric,
                "data": data,
                "rows": rows,
                "deadline_s": deadline_s,
            }
        )
        return self.create(request, actor)

    def create(self, request: EvaluationIn, actor: str) -> EvaluationRecord:
        """:meth:`start` for a validated request (the API's body)."""
        name = check_name(request.model, "model name")
        if request.data is not None:
            check_name(request.data, "data set name")
        records = self._resolve(name, request.versions)
        selector = parse_selector(request.selector)
        metric = request.metric or default_metric(records[0])
        if metric in CLASSIFICATION:
            for record in records:
                if not may_classify(record):
                    raise InvalidInput(
                        f"metric {metric} needs a classifier; {name}:{record.version} has no "
                        "integer (label) or class-score output (use mae for a regressor)"
                    )
        fleet = self.sites.list()
        matched = [s for s in fleet if selector.matches(s.labels)]
        if not matched:
            raise InvalidInput(
                f"selector {request.selector!r} matches no site (see `modelfleet site ls`)"
            )
        sites = self._eligibility(name, request, records, matched, fleet)
        selected = sorted(s for s, info in sites.items() if info["status"] == "selected")
        now = self.repo.now()
        row = EvaluationRow(
            id=f"ev-{secrets.token_hex(4)}",
            model=name,
            versions=[r.version for r in records],
            refs=list(request.versions),
            selector=request.selector,
            metric=metric,
            min_samples=request.min_samples,
            data=request.data,
            rows=request.rows,
            sites=sites,
            state="running",
            winner=None,
            message=f"waiting for {len(selected)} site(s)",
            deadline_at=now + timedelta(seconds=request.deadline_s),
            created_by=actor,
            created_at=now,
            finished_at=None,
        )
        created = self.repo.create(row)
        self._changed()
        log.info("evaluation %s of %s %s at %s", row.id, name, row.versions, selected)
        if not selected:
            self._finish(created, [], "failed", "no selected site can evaluate: " + _why(sites))
        else:
            self.bell.notify_many(selected)
        return self.get(created.id)

    def _resolve(self, name: str, refs: Sequence[str]) -> list[VersionRecord]:
        if not 2 <= len(refs) <= MAX_VERSIONS:
            raise InvalidInput(f"an evaluation compares 2 to {MAX_VERSIONS} versions")
        self.registry.model(name)  # NotFound for an unknown model, before any ref
        records: list[VersionRecord] = []
        for ref in refs:
            text = ref.strip()
            if text.isdigit():
                parsed = ModelRef(name, version=int(text))
            else:
                parsed = ModelRef(name, alias=check_alias(text))
            record = self.registry.resolve(parsed)
            same = [r for r in records if r.version == record.version]
            if same:
                raise InvalidInput(
                    f"{ref!r} and another of the versions both name {name}:{record.version}: "
                    "there is nothing to compare"
                )
            records.append(record)
        return records

    def _eligibility(
        self,
        model: str,
        request: EvaluationIn,
        records: Sequence[VersionRecord],
        matched: Sequence[SiteRecord],
        fleet: Sequence[SiteRecord],
    ) -> dict[str, dict[str, str]]:
        """Every matched site with ``selected`` or why it is left out (``fleet``: every
        site, whose labels say which jurisdiction each data region is in)."""
        consents = self._consents()
        rules = self.deployments.rules()
        now = self.repo.now()
        out: dict[str, dict[str, str]] = {}
        for site in matched:
            declared = consents.get(site.name)
            consent = Consent.model_validate(declared) if declared is not None else None
            reason = consent_refusal(consent, model, request.data)
            violations = [
                found
                for record in records
                for found in check_residency(rules, record.training_regions, [site], fleet)
            ]
            if site.decommissioned_at is not None:
                out[site.name] = {"status": "excluded", "reason": "decommissioned"}
            elif site.enrolled_at is None:
                out[site.name] = {"status": "excluded", "reason": "not enrolled"}
            elif violations:
                detail = "; ".join(f"rule {v.rule!r}: {v.detail}" for v in violations[:3])
                out[site.name] = {"status": "refused", "reason": f"residency: {detail}"}
            elif reason is not None:
                out[site.name] = {"status": "refused", "reason": reason}
            elif not self.sites.online(site, now):
                out[site.name] = {"status": "offline", "reason": "site is offline"}
            else:
                out[site.name] = {"status": "selected", "reason": ""}
        return out

    def get(self, evaluation_id: str) -> EvaluationRecord:
        """One evaluation with its scores; ``NotFound`` if there is none."""
        row = self.repo.get(evaluation_id)
        return build_record(row, self.repo.answers(row.id))

    def list(self, model: str | None = None, limit: int = 100) -> builtins.list[EvaluationRecord]:
        """Evaluations newest first (of one model when given)."""
        rows = self.repo.list_evaluations(model=model, limit=limit)
        return [build_record(r, self.repo.answers(r.id)) for r in rows]

    # --- sites ------------------------------------------------------------------------

    def tasks_for(self, site: str) -> builtins.list[EvaluationTask]:
        """Running evaluations this site was selected for and has not answered."""
        now = self.repo.now()
        return [
            task
            for row, answered, task in self._open()
            if site in row.selected and site not in answered and now < row.deadline_at
        ]

    def _open(self) -> Snapshot:
        """The running evaluations, from a snapshot at most ``SNAPSHOT_TTL_S`` old; one
        caller builds it while a burst of polls waits for it."""
        with self._snapshot_lock:
            if self._snapshot is not None and time.monotonic() < self._snapshot[0]:
                return self._snapshot[1]
            rows = self.repo.list_evaluations(states=("running",), limit=1000)
            snapshot = [
                (row, {a.site for a in self.repo.answers(row.id)}, self._task(row)) for row in rows
            ]
            self._snapshot = (time.monotonic() + SNAPSHOT_TTL_S, snapshot)
            return snapshot

    def _changed(self) -> None:
        with self._snapshot_lock:
            self._snapshot = None

    def _task(self, row: EvaluationRow) -> EvaluationTask:
        versions = []
        for number in row.versions:
            record = self.registry.version(row.model, number)
            if record is None:  # versions are immutable; only a restored backup lacks one
                raise NotFound(f"model {row.model!r} has no version {number} any more")
            versions.append(
                TaskVersion(
                    version=number,
                    manifest=record.manifest,
                    signature=record.signature,
                    digest=record.digest,
                    size=record.size,
                )
            )
        return EvaluationTask(
            evaluation=row.id,
            model=row.model,
            metric=_METRICS.get(row.metric, "accuracy"),
            min_samples=row.min_samples,
            data=row.data,
            rows="all" if row.rows == "all" else "holdout",
            deadline_at=row.deadline_at,
            versions=versions,
        )

    def _selected_row(self, site: str, evaluation_id: str) -> EvaluationRow:
        row = self.repo.get(evaluation_id)
        if site not in row.selected:
            raise PermissionDenied(f"site {site!r} was not asked to evaluate {evaluation_id!r}")
        return row

    def blob_for(self, site: str, evaluation_id: str, digest: str) -> None:
        """Raise unless ``site`` may download blob ``digest`` for this evaluation: it was
        selected, the evaluation runs, and the blob is one of its versions."""
        row = self._selected_row(site, evaluation_id)
        if row.state != "running":
            raise Conflict(f"evaluation {evaluation_id!r} is {row.state}")
        digests = {r.digest for v in row.versions if (r := self.registry.version(row.model, v))}
        if digest not in digests:
            raise PermissionDenied(f"blob {digest[:12]} is not part of {evaluation_id!r}")

    def answer(self, site: str, evaluation_id: str, body: EvaluationResultIn) -> bool:
        """Store a site's counts (validated against the evaluation); True if new."""
        row = self._selected_row(site, evaluation_id)
        if set(body.scores) != set(row.versions):
            raise InvalidInput(
                f"scores must name exactly versions {row.versions}, got {sorted(body.scores)}"
            )
        for version, counts in body.scores.items():
            check_counts(row, version, counts)
        scores = {str(v): c.model_dump(exclude_none=True) for v, c in body.scores.items()}
        return self._store_answer(row, site, "result", scores, "")

    def refuse(self, site: str, evaluation_id: str, reason: str) -> bool:
        """A site declines, with the reason operators will see; True if new."""
        row = self._selected_row(site, evaluation_id)
        return self._store_answer(row, site, "refusal", {}, reason[:2000])

    def _store_answer(
        self, row: EvaluationRow, site: str, kind: str, scores: dict[str, Any], reason: str
    ) -> bool:
        if row.state != "running":
            raise Conflict(f"evaluation {row.id!r} is already {row.state}")
        stored = self.repo.put_answer(row.id, site, kind, scores, reason)
        self._changed()
        self.advance(row.id)
        return stored

    # --- the state machine --------------------------------------------------------------

    def advance(self, evaluation_id: str) -> None:
        """Finish the evaluation if it is due; safe to call any time, from anywhere."""
        row = self.repo.get(evaluation_id)
        if row.state != "running":
            return
        answers = self.repo.answers(row.id)
        answered = {a.site for a in answers}
        results = [a for a in answers if a.kind == "result"]
        everyone = answered >= set(row.selected)
        late = self.repo.now() >= row.deadline_at
        if not everyone and not late:
            return
        missing = sorted(set(row.selected) - answered)
        tail = f"; missing: {', '.join(missing)}" if missing else ""
        if not results:
            refused = len(answers)
            self._finish(
                row, answers, "failed", f"no site returned counts ({refused} refused{tail})"
            )
            return
        self._finish(row, answers, "completed", f"{len(results)} site(s) answered{tail}")

    def _finish(
        self, row: EvaluationRow, answers: Sequence[AnswerRow], state: str, message: str
    ) -> None:
        record = build_record(row, answers)
        best = winner(row.metric, record.per_version) if state == "completed" else None
        if not self.repo.finish(row.id, state, winner=best, message=message):
            return  # finished by another call or replica
        self._changed()
        log.info("evaluation %s %s: %s (winner %s)", row.id, state, message, best)
        if self.events is None:
            return
        self.events.emit(
            f"evaluation.{state}",
            row.id,
            {
                "evaluation": row.id,
                "model": row.model,
                "versions": row.versions,
                "refs": row.refs,
                "metric": row.metric,
                "winner": best,
                "per_version": {
                    str(v): {"value": s.value, "count": s.count}
                    for v, s in record.per_version.items()
                },
                "message": message,
            },
            key=f"evaluation/{row.id}/{state}",
        )


#: The stored metric as the task's field (the request's enum admitted it at the start).
_METRICS: dict[str, Metric] = {m: m for m in ("accuracy", "balanced_accuracy", "mae")}


def parse_request(body: object) -> EvaluationIn:
    """The request validated, or ``InvalidInput`` naming the first bad field and why."""
    try:
        return EvaluationIn.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        raise InvalidInput(f"invalid evaluation: {where}: {err.get('msg')}") from exc


def default_metric(version: VersionRecord) -> str:
    """accuracy for a classifier (a model with an integer output: its label), else mae."""
    outputs = version.io.get("outputs", []) if isinstance(version.io, dict) else []
    for output in outputs:
        datatype = str(output.get("datatype") or "")
        if datatype.startswith(("INT", "UINT")):
            return "accuracy"
    return "mae"


def may_classify(version: VersionRecord) -> bool:
    """Whether the site could read a label from this version: an integer output, or a
    float output of class scores (2-D, more than one column or an unknown number). False
    only for a model that certainly gives one real value per row (a regressor)."""
    outputs = version.io.get("outputs") if isinstance(version.io, dict) else None
    if not outputs:
        return True  # not inspected: the site decides
    for output in outputs:
        datatype = str(output.get("datatype") or "")
        shape = output.get("shape") or []
        if datatype.startswith(("INT", "UINT")):
            return True
        if datatype.startswith("FP") and len(shape) == 2 and shape[1] != 1:
            return True
    return False


def consent_refusal(consent: Consent | None, model: str, data: str | None) -> str | None:
    """Why a site with this federation consent cannot evaluate ``model`` on ``data``."""
    if consent is None:
        return "the site has not declared consent to use its data (no federation config)"
    if not consent.participate:
        return "site config refuses fleet learning" + (
            f": {consent.reason}" if consent.reason else ""
        )
    if not any(fnmatch.fnmatchcase(model, pattern) for pattern in consent.models):
        return f"site config does not allow model {model!r} (allows {consent.models})"
    if data is None:
        if len(consent.datasets) != 1:
            have = ", ".join(consent.datasets) or "none"
            return f"site has {len(consent.datasets)} data sets ({have}); name one with data"
    elif data not in consent.datasets:
        return f"site has no data set {data!r} (has {consent.datasets or 'none'})"
    return None


def _why(sites: dict[str, dict[str, str]]) -> str:
    return "; ".join(f"{s}: {info['reason']}" for s, info in sorted(sites.items()))[:2000]
