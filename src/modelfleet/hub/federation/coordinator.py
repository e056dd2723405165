"""The hub's federation coordinator: a persisted, idempotent job/round state machine.

Every step reads the job's state from the store and moves it with a compare-and-set, so
the coordinator holds no state a SIGKILL could lose: a restarted hub calls :meth:`tick`
and each job continues from its last committed step (an open round keeps collecting
updates until its deadline; a job killed while registering its result finds the version
it may already have registered by its ``fl.job`` tag instead of registering it twice).

A job's life::

    running: open round r (select eligible online sites, publish weights, deadline)
             -> collect updates / refusals
             -> all answered, or deadline with >= min_sites updates: aggregate, close
             -> deadline with too few: round attempt failed, reopen (max attempts)
    finalizing: build ONNX from spec + weights, register with lineage, alias
    completed | failed | aborted

Steps run from the background loop (deadlines, waiting jobs) and right after the
request that made progress possible (a job created, the last update posted), so a round
closes the moment its last site answers. Several hub replicas are safe: every transition
is conditional, and a :class:`~modelfleet.hub.store.Leadership` lets only one replica run
the loop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from modelfleet.crashpoints import crash_point
from modelfleet.errors import Conflict, InvalidInput, ModelfleetError, NotFound
from modelfleet.federation import wire
from modelfleet.federation.jobs import Consent, JobConfig, refusal
from modelfleet.federation.rounds import (
    aggregate_round,
    clip_norm_for,
    default_stages,
    delta_norm,
)
from modelfleet.federation.specs import ModelSpec, flatten, read_onnx
from modelfleet.federation.strategies import make_strategy
from modelfleet.federation.wire import pack_state, pack_vector, unpack_state, unpack_vector
from modelfleet.hub.events import Events
from modelfleet.hub.federation.personalization import register_variants, registered_variants
from modelfleet.hub.federation.registration import register_result, registered_version
from modelfleet.hub.federation.round_inputs import example_caps, stored_updates
from modelfleet.hub.federation.taskboard import TaskBoard
from modelfleet.hub.federation.views import job_view, waiting_message
from modelfleet.hub.registry import Registry
from modelfleet.hub.selectors import parse_selector
from modelfleet.hub.sites import Sites
from modelfleet.hub.store import Store
from modelfleet.hub.store.records import JobRow, NewJob, RoundRow
from modelfleet.hub.wakeups import Notifier
from modelfleet.loops import BackgroundLoop
from modelfleet.refs import parse_ref

log = logging.getLogger("modelfleet.federation")

FINISHED = ("completed", "failed", "aborted")
MAX_EXAMPLES = 1 << 40


class Coordinator:
    """Federated jobs on top of the store, the registry and the sites service."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        sites: Sites,
        *,
        tmp_dir: Path,
        tick_s: float = 0.25,
        events: Events | None = None,
    ) -> None:
        self.repo = store.federation
        self.registry = registry
        self.sites = sites
        self.tmp_dir = tmp_dir
        self.tick_s = tick_s
        # Wakes the sites' task long-polls when a round opens.
        self.bell = Notifier()
        self.events = events  # fl.job_finished, told by _end (hub/events.py)
        self.lease = store.leadership("federated coordinator")
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._waiting_since: dict[str, float] = {}
        self._specs: dict[str, ModelSpec] = {}
        self.board = TaskBoard(self.repo)
        self._loop = BackgroundLoop(
            "fl-coordinator",
            self._tick_if_leader,
            interval_s=tick_s,
            logger=log,
            failure_message="federation coordinator tick failed",
        )

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Run the loop in a daemon thread (the hub's lifespan calls this)."""
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
        self.lease.release()

    def _tick_if_leader(self) -> None:
        if self.lease.poll():
            self.tick()

    def tick(self) -> None:
        """Advance every active job by whatever steps are due now."""
        for job in self.repo.list_jobs(("running", "finalizing")):
            self.advance(job.id)

    def _lock(self, job_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(job_id, threading.Lock())

    # --- operator side ------------------------------------------------------------

    def start_job(self, config: JobConfig, actor: str) -> JobRow:
        config.check()
        if config.id is not None:
            with contextlib.suppress(NotFound):
                existing = self.repo.get_job(config.id)
                if existing.config == config.model_dump(mode="json"):
                    return existing
                raise Conflict(f"federated job {config.id!r} exists with another configuration")
        version = self.registry.resolve(parse_ref(config.model))
        spec, weights = self._base_model(version.digest)
        parse_selector(config.sites)
        job_id = config.id or f"fl-{secrets.token_hex(4)}"
        stored = config.model_copy(update={"id": job_id})
        job = self.repo.create_job(
            NewJob(
                id=job_id,
                model=version.model,
                base_version=version.version,
                spec=spec.model_dump(mode="json"),
                config=stored.model_dump(mode="json"),
                weights=pack_vector(flatten(spec, weights)),
                sites={},
                created_by=actor,
            )
        )
        self.advance(job.id)
        return self.repo.get_job(job.id)

    def _base_model(self, digest: str) -> tuple[ModelSpec, dict[str, Any]]:
        data = self.registry.read_artifact(digest)
        try:
            model = onnx.load_from_string(data)
        except Exception as exc:
            raise InvalidInput(f"the model's artifact cannot be read as ONNX: {exc}") from exc
        return read_onnx(model)

    def abort(self, job_id: str, reason: str = "aborted by an operator") -> JobRow:
        job = self.repo.get_job(job_id)
        if job.state in FINISHED:
            raise Conflict(f"federated job {job_id!r} is already {job.state}")
        aborted = self._end(job_id, ("running",), "aborted", message=reason)
        self.board.invalidate()
        if not aborted:
            raise Conflict(f"federated job {job_id!r} is {self.repo.get_job(job_id).state}")
        return self.repo.get_job(job_id)

    def jobs(self) -> list[JobRow]:
        """Every federated job, oldest first."""
        return self.repo.list_jobs()

    def job(self, job_id: str) -> JobRow:
        """One job; ``NotFound`` (pointing at ``fl ls``) if there is none."""
        return self.repo.get_job(job_id)

    def consents(self) -> dict[str, dict[str, Any]]:
        """What each site declared about taking part."""
        return self.repo.consents()

    def view(self, job: JobRow, *, rounds: bool = True) -> dict[str, Any]:
        """The operator's picture of a job; with ``rounds``, per-round participants."""
        out = job_view(self.repo, job, rounds=rounds)
        if rounds and job.config.get("personalize_epochs"):
            name = job.config.get("result_model") or job.model
            out["variants"] = registered_variants(self.registry, name, job.id)
        return out

    # --- site side ----------------------------------------------------------------

    def declare(self, site: str, body: dict[str, Any]) -> Consent:
        consent = Consent.model_validate(body)
        self.repo.set_consent(site, consent.model_dump(mode="json"))
        return consent

    def tasks_for(self, site: str) -> list[dict[str, Any]]:
        """Open rounds this site was selected for and has not answered: only its own."""
        return self.board.tasks_for(site)

    def cached_tasks_for(self, site: str) -> list[dict[str, Any]] | None:
        """:meth:`tasks_for` without touching the store (cheap enough for the event
        loop); None when the open-task snapshot must be rebuilt first."""
        return self.board.cached_tasks_for(site)

    def weights_for(self, job_id: str, number: int, site: str | None) -> bytes:
        """Round weights; a site only gets rounds it was selected for."""
        rnd = self.repo.get_round(job_id, number)
        if site is not None and site not in rnd.selected:
            raise NotFound(f"site {site!r} has no task in round {number} of job {job_id!r}")
        return self.repo.round_weights(job_id, number)

    def submit(self, site: str, job_id: str, number: int, body: bytes) -> dict[str, Any]:
        """Store a site's update (validated, not yet aggregated); idempotent per site."""
        meta, arrays = wire.unpack(body)
        spec = self._spec(job_id)
        delta = arrays.get("delta")
        if delta is None or delta.shape != (spec.size(),):
            raise InvalidInput(f"an update must carry a 'delta' array of {spec.size()} values")
        examples = meta.get("num_examples")
        if isinstance(examples, bool) or not isinstance(examples, int):
            raise InvalidInput("num_examples must be an integer")
        if not 0 < examples < MAX_EXAMPLES:
            raise InvalidInput("num_examples must be positive")
        attempt = _int(meta.get("attempt"), "attempt")
        metrics = _metrics(meta.get("metrics", {}))
        payload = wire.pack({}, {"delta": np.asarray(delta, np.float32)})
        stored, rnd, answered = self.repo.put_update(
            job_id,
            number,
            attempt,
            site,
            kind="update",
            num_examples=examples,
            metrics=metrics,
            payload=payload,
        )
        return {
            "job": job_id,
            "round": number,
            "site": site,
            "accepted": True,
            "new": stored,
            "round_complete": self._complete(rnd, answered),
        }

    def _complete(self, rnd: RoundRow, answered: set[str]) -> bool:
        """Whether every selected site has answered: the round can close right now."""
        self.board.mark_answered(rnd, answered)
        return answered >= set(rnd.selected)

    def _spec(self, job_id: str) -> ModelSpec:
        """A job's spec never changes, so it is read once per process."""
        spec = self._specs.get(job_id)
        if spec is None:
            spec = self._specs[job_id] = ModelSpec.parse(self.repo.get_job(job_id).spec)
        return spec

    def refuse(
        self, site: str, job_id: str, number: int, attempt: int, reason: str
    ) -> dict[str, Any]:
        """A site declines a task; the reason is shown with the round."""
        stored, rnd, answered = self.repo.put_update(
            job_id, number, attempt, site, kind="refusal", reason=reason[:2000] or "refused"
        )
        return {
            "job": job_id,
            "round": number,
            "site": site,
            "refused": True,
            "new": stored,
            "round_complete": self._complete(rnd, answered),
        }

    # --- the state machine ------------------------------------------------------------

    def advance(self, job_id: str) -> None:
        """Take every step due for one job now; safe to call any time, from anywhere."""
        with self._lock(job_id):
            for _ in range(4):  # close -> open next in one call; bounded
                job = self.repo.get_job(job_id)
                if not self._step(job):
                    return

    def _step(self, job: JobRow) -> bool:
        """One transition; True if something changed and another step may be due."""
        config = JobConfig.model_validate(job.config)
        if job.state == "finalizing":
            self._finalize(job, config)
            return False
        if job.state != "running":
            return False
        if job.current_round >= config.total_rounds():
            return self.repo.transition(job.id, ("running",), "finalizing")
        number = job.current_round + 1
        try:
            rnd: RoundRow | None = self.repo.get_round(job.id, number)
        except NotFound:
            rnd = None
        if rnd is None or rnd.state == "failed":
            return self._open(job, config, number, rnd)
        if rnd.state == "open":
            return self._maybe_close(job, config, rnd)
        return False

    def eligibility(self, job: JobRow, config: JobConfig) -> dict[str, dict[str, Any]]:
        """Every site the selector matches, with whether it can take part and why not."""
        selector = parse_selector(config.sites)
        consents = self.repo.consents()
        out: dict[str, dict[str, Any]] = {}
        now = self.repo.now()
        for site in self.sites.list():
            if not selector.matches(site.labels):
                continue
            declared = consents.get(site.name)
            consent = Consent.model_validate(declared) if declared is not None else None
            reason = refusal(consent, config, job.model)
            if site.decommissioned_at is not None:  # serves nothing: trains nothing either
                out[site.name] = {"status": "excluded", "reason": "decommissioned"}
            elif reason is not None:
                out[site.name] = {"status": "refused", "reason": reason}
            elif site.enrolled_at is None:
                out[site.name] = {"status": "excluded", "reason": "not enrolled"}
            elif not self.sites.online(site, now):
                out[site.name] = {"status": "offline", "reason": "site is offline"}
            else:
                out[site.name] = {"status": "eligible", "reason": ""}
        return out

    def _open(self, job: JobRow, config: JobConfig, number: int, failed: RoundRow | None) -> bool:
        if failed is not None and failed.attempt >= config.max_round_attempts:
            return self._end(
                job.id,
                ("running",),
                "failed",
                message=f"round {number} failed {failed.attempt} times: "
                + str(failed.outcome.get("reason", "")),
            )
        sites = self.eligibility(job, config)
        eligible = sorted(s for s, info in sites.items() if info["status"] == "eligible")
        if len(eligible) < config.min_sites:
            since = self._waiting_since.setdefault(job.id, time.monotonic())
            message = waiting_message(sites, config.sites, config.min_sites)
            if time.monotonic() - since > config.wait_for_sites_s:
                self._waiting_since.pop(job.id, None)
                return self._end(
                    job.id, ("running",), "failed", message=message + " (gave up)", sites=sites
                )
            if job.message != message or job.sites != sites:
                self.repo.set_job_info(job.id, message=message, sites=sites)
            return False
        self._waiting_since.pop(job.id, None)
        weights, _ = self.repo.job_weights(job.id)
        deadline = self.repo.now() + timedelta(seconds=config.round_timeout_s)
        opened = self.repo.open_round(
            job.id, number, selected=eligible, weights=weights, deadline_at=deadline, sites=sites
        )
        self.board.invalidate()
        if opened is None:
            return False
        log.info("job %s round %d open for %s", job.id, number, ", ".join(eligible))
        self.board.open_tasks()  # built before the wake-up, not by the first poll it wakes
        self.bell.notify_many(eligible)
        return False

    def _maybe_close(self, job: JobRow, config: JobConfig, rnd: RoundRow) -> bool:
        updates = self.repo.list_updates(job.id, rnd.number)
        answered = {u.site for u in updates}
        contributed = [u for u in updates if u.kind == "update"]
        everyone = answered >= set(rnd.selected)
        late = self.repo.now() >= rnd.deadline_at
        if not everyone and not late:
            return False
        stragglers = sorted(set(rnd.selected) - answered)
        refusals = {u.site: u.reason for u in updates if u.kind == "refusal"}
        outcome: dict[str, Any] = {"stragglers": stragglers, "refusals": refusals}
        if config.personalizes(rnd.number):  # nothing to aggregate: variants at finalize
            weights_blob, state_blob = self.repo.job_weights(job.id)
            closed = self.repo.close_round(
                job.id,
                rnd.number,
                rnd.attempt,
                state="closed",
                metrics={"num_sites": len(contributed)},
                outcome=outcome,
                weights=weights_blob,
                strategy_state=state_blob,
                keep_payloads=True,  # each becomes a site's variant at finalize
            )
            self.board.invalidate()
            return closed
        if len(contributed) < config.min_sites:
            outcome["reason"] = (
                f"{len(contributed)} update(s) by the {'deadline' if late else 'last answer'}, "
                f"need {config.min_sites}"
            )
            self.repo.close_round(
                job.id, rnd.number, rnd.attempt, state="failed", metrics={}, outcome=outcome
            )
            self.board.invalidate()
            return True
        strategy = make_strategy(config.strategy, config.strategy_params)
        weights_blob, state_blob = self.repo.job_weights(job.id)
        vector = unpack_vector(weights_blob)
        started = time.perf_counter()
        caps = example_caps(self.repo.consents(), config)
        # Two passes over the stored updates (one model in memory at a time): the norms
        # first, for clipping relative to the round's median, then the aggregation.
        bound = clip_norm_for(
            config.clip_norm,
            (delta_norm(u) for u in stored_updates(self.repo, job.id, rnd.number, caps)),
        )
        try:
            result = aggregate_round(
                strategy,
                vector,
                unpack_state(state_blob),
                stored_updates(self.repo, job.id, rnd.number, caps),
                round_number=rnd.number,
                stages=default_stages(bound),
            )
        except InvalidInput as exc:
            # Nothing usable, or an aggregate that is not finite: the round fails (and is
            # retried up to max_round_attempts); its result is never stored.
            outcome["reason"] = exc.message
            self.repo.close_round(
                job.id, rnd.number, rnd.attempt, state="failed", metrics={}, outcome=outcome
            )
            self.board.invalidate()
            log.warning("job %s round %d failed: %s", job.id, rnd.number, exc.message)
            return True
        # Killed here, the round stays open with its updates: the restart aggregates again.
        crash_point("hub.fl.after_aggregate")
        outcome["dropped"] = result.dropped
        outcome["clip_norm"] = bound
        capped = {u.site: u.num_examples for u in contributed if u.num_examples > caps(u.site)}
        if capped:
            outcome["examples_capped"] = capped
        outcome["aggregation_s"] = time.perf_counter() - started
        closed = self.repo.close_round(
            job.id,
            rnd.number,
            rnd.attempt,
            state="closed",
            metrics=result.metrics,
            outcome=outcome,
            weights=pack_vector(result.weights),
            strategy_state=pack_state(result.state) if result.state else None,
        )
        self.board.invalidate()
        if closed:
            log.info("job %s round %d closed: %s", job.id, rnd.number, result.metrics)
        return closed

    def _end(self, job_id: str, expected: tuple[str, ...], state: str, **values: Any) -> bool:
        """A transition to a finished state, told as ``fl.job_finished`` when it happened."""
        moved = self.repo.transition(job_id, expected, state, **values)
        if moved and self.events is not None:
            self.events.job_finished(self.repo.get_job(job_id))
        return moved

    # --- result -------------------------------------------------------------------

    def _finalize(self, job: JobRow, config: JobConfig) -> None:
        name = config.result_model or job.model
        existing = registered_version(self.registry, name, job.id)
        variants: dict[str, int] = {}
        try:
            if existing is None:
                existing = register_result(
                    self.repo, self.registry, self.sites, self.tmp_dir, job, config, name
                )
                # Killed here, the restart finds this version by its tag (registered_version).
                crash_point("hub.fl.after_register")
            if config.personalize_epochs:
                variants = register_variants(
                    self.repo, self.registry, self.sites, self.tmp_dir, job, config, name, existing
                )
        except ModelfleetError as exc:
            self._end(
                job.id, ("finalizing",), "failed", message=f"registering failed: {exc.message}"
            )
            return
        message = f"registered {name}:{existing}"
        if variants:
            message += "; site variants: " + ", ".join(
                f"{site}={name}:{version}" for site, version in sorted(variants.items())
            )
        self._end(job.id, ("finalizing",), "completed", result_version=existing, message=message)


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be an integer")
    return value


def _metrics(raw: object) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise InvalidInput("metrics must be an object of numbers")
    out: dict[str, float] = {}
    for key, value in list(raw.items())[:64]:
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        # float() first: np.isfinite refuses (TypeError) a Python int beyond 64 bits, and
        # an int beyond a float's range (10**400) overflows; both are dropped like NaN.
        try:
            number = float(value)
        except OverflowError:
            continue
        if math.isfinite(number):
            out[str(key)[:64]] = number
    return out


def utc_iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
