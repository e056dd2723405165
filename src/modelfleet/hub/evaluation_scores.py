"""What an evaluation's answers add up to: pure functions over the sites' counts.

Kept apart from the service (hub/evaluations.py) so the pipeline's decision — does the
candidate beat production? — is a function of a record alone, testable and repeatable
without a hub: :func:`beats`, :func:`winner`, :func:`aggregate`, and :func:`build_record`,
which turns the stored row and answers into the :class:`EvaluationRecord` callers read.

A site answers per version with ``count`` (rows evaluated) and ``total`` (the number of
correct predictions for accuracy, the sum of absolute errors for MAE). Sites are combined
by summing both, so each version's metric is the count-weighted mean over the sites —
the metric on the union of their rows, exactly as if the rows had been pooled (they are
not: only the two numbers leave a site).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from modelfleet.hub.store.records import AnswerRow, EvaluationRow

#: Metrics where a higher value is better; every other metric (mae) is lower-is-better.
HIGHER_IS_BETTER = frozenset({"accuracy"})


@dataclass(frozen=True)
class VersionScore:
    """One version's metric over some sites: ``value`` is None without any sample."""

    version: int
    metric: str
    value: float | None
    count: int
    total: float
    sites: int


@dataclass(frozen=True)
class SiteOutcome:
    """One selected or left-out site: status (answered, refused, missing, waiting,
    offline, excluded), the reason, and its own score per version when it answered."""

    site: str
    status: str
    reason: str = ""
    scores: dict[int, VersionScore] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationRecord:
    """An evaluation with its outcome computed from the stored answers."""

    id: str
    model: str
    versions: list[int]
    refs: list[str]
    selector: str
    metric: str
    min_samples: int
    data: str | None
    rows: str
    state: str  # running | completed | failed
    winner: int | None
    message: str
    deadline_at: datetime
    created_by: str
    created_at: datetime
    finished_at: datetime | None
    per_version: dict[int, VersionScore]
    sites: dict[str, SiteOutcome]


def score(version: int, metric: str, parts: Iterable[tuple[int, float]]) -> VersionScore:
    """Sum ``(count, total)`` pairs of several sites into one version's score."""
    count, total, sites = 0, 0.0, 0
    for part_count, part_total in parts:
        count += part_count
        total += part_total
        sites += 1
    value = total / count if count else None
    return VersionScore(version, metric, value, count, total, sites)


def aggregate(
    versions: Iterable[int], metric: str, answers: Mapping[str, Mapping[int, tuple[int, float]]]
) -> dict[int, VersionScore]:
    """Per version, the count-weighted metric over every site's answer."""
    return {
        v: score(v, metric, (scores[v] for scores in answers.values() if v in scores))
        for v in versions
    }


def better(metric: str, a: float, b: float) -> float:
    """How much better ``a`` is than ``b`` under ``metric`` (negative: worse)."""
    return a - b if metric in HIGHER_IS_BETTER else b - a


def winner(metric: str, per_version: Mapping[int, VersionScore]) -> int | None:
    """The version with the best metric; None when none has samples or the best ties."""
    scored = [(s.value, v) for v, s in per_version.items() if s.value is not None and s.count]
    if not scored:
        return None
    ranked = sorted(scored, key=lambda item: item[0], reverse=metric in HIGHER_IS_BETTER)
    if len(ranked) > 1 and ranked[0][0] == ranked[1][0]:
        return None
    return ranked[0][1]


def margin(record: EvaluationRecord, candidate: int, incumbent: int) -> float | None:
    """How much better ``candidate`` did than ``incumbent`` (accuracy points, or MAE
    less); None unless the evaluation completed with samples for both."""
    if record.state != "completed":
        return None
    a, b = record.per_version.get(candidate), record.per_version.get(incumbent)
    if a is None or b is None or a.value is None or b.value is None:
        return None
    return better(record.metric, a.value, b.value)


def beats(record: EvaluationRecord, candidate: int, incumbent: int, margin: float = 0.0) -> bool:
    """Whether ``candidate`` did better than ``incumbent`` by more than ``margin``.

    False unless the evaluation completed and both versions were scored on at least one
    sample: an evaluation nobody answered never moves an alias.
    """
    improvement = _margin(record, candidate, incumbent)
    return improvement is not None and improvement > margin


_margin = margin  # ``beats`` takes a parameter of that name


def build_record(row: EvaluationRow, answers: Sequence[AnswerRow]) -> EvaluationRecord:
    """The stored row and answers as the record callers read (scores computed)."""
    by_site: dict[str, dict[int, tuple[int, float]]] = {}
    outcomes: dict[str, SiteOutcome] = {}
    for answer in answers:
        if answer.kind == "result":
            counts = {
                int(v): (int(c["count"]), float(c["total"])) for v, c in answer.scores.items()
            }
            by_site[answer.site] = counts
            outcomes[answer.site] = SiteOutcome(
                answer.site,
                "answered",
                scores={v: score(v, row.metric, [c]) for v, c in counts.items()},
            )
        else:
            outcomes[answer.site] = SiteOutcome(answer.site, "refused", answer.reason)
    for site, info in row.sites.items():
        if site in outcomes:
            continue
        if info.get("status") == "selected":
            late = row.state != "running"
            status = "missing" if late else "waiting"
            reason = "no answer by the deadline" if late else ""
            outcomes[site] = SiteOutcome(site, status, reason)
        else:
            outcomes[site] = SiteOutcome(site, str(info.get("status")), str(info.get("reason")))
    return EvaluationRecord(
        id=row.id,
        model=row.model,
        versions=list(row.versions),
        refs=list(row.refs),
        selector=row.selector,
        metric=row.metric,
        min_samples=row.min_samples,
        data=row.data,
        rows=row.rows,
        state=row.state,
        winner=row.winner,
        message=row.message,
        deadline_at=row.deadline_at,
        created_by=row.created_by,
        created_at=row.created_at,
        finished_at=row.finished_at,
        per_version=aggregate(row.versions, row.metric, by_site),
        sites=dict(sorted(outcomes.items())),
    )
