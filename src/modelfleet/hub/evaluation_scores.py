"""What an evaluation's answers add up to: pure functions over the sites' counts.

Kept apart from the service (hub/evaluations.py) so the pipeline's decision — does the
candidate beat production? — is a function of a record alone, testable and repeatable
without a hub: :func:`beats`, :func:`winner`, :func:`aggregate`, and :func:`build_record`,
which turns the stored row and answers into the :class:`EvaluationRecord` callers read;
:func:`check_counts` is what a site's answer must satisfy to be stored.

A site answers per version with ``count`` (rows evaluated) and ``total`` (the number of
correct predictions for accuracy, the sum of absolute errors for MAE). Sites are combined
by summing both, so each version's metric is the count-weighted mean over the sites —
the metric on the union of their rows, exactly as if the rows had been pooled (they are
not: only the two numbers leave a site).

Balanced accuracy (the mean of per-class recall) cannot be combined from per-site values:
each site also sends, per true class, ``(right, total)``; the hub sums those per class
and takes the mean of ``right / total`` over the classes that have rows — again exactly
the figure on the pooled rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelfleet.api.evaluations import CLASSIFICATION, VersionCounts
from modelfleet.errors import InvalidInput
from modelfleet.hub.store.records import AnswerRow, EvaluationRow

#: Metrics where a higher value is better; every other metric (mae) is lower-is-better.
HIGHER_IS_BETTER = frozenset({"accuracy", "balanced_accuracy"})

#: Per true class: (rows of that class predicted as it, rows of that class).
ClassCounts = dict[str, tuple[int, int]]


@dataclass(frozen=True)
class Counts:
    """One site's answer for one version, as stored: rows, the metric's sum and (for
    balanced accuracy only) the per-class counts."""

    count: int
    total: float
    classes: ClassCounts | None = None


@dataclass(frozen=True)
class VersionScore:
    """One version's metric over some sites: ``value`` is None without any sample."""

    version: int
    metric: str
    value: float | None
    count: int
    total: float
    sites: int
    classes: ClassCounts | None = None  # balanced_accuracy only: summed over the sites


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


def score(version: int, metric: str, parts: Iterable[Counts]) -> VersionScore:
    """Sum several sites' counts into one version's score (per class too, for
    balanced accuracy)."""
    count, total, sites = 0, 0.0, 0
    classes: ClassCounts = {}
    for part in parts:
        count += part.count
        total += part.total
        sites += 1
        for name, (right, rows) in (part.classes or {}).items():
            had_right, had_rows = classes.get(name, (0, 0))
            classes[name] = (had_right + right, had_rows + rows)
    if metric == "balanced_accuracy":
        value = balanced(classes)
        by_class: ClassCounts | None = dict(sorted(classes.items()))
    else:
        value, by_class = (total / count if count else None), None
    return VersionScore(version, metric, value, count, total, sites, by_class)


def balanced(classes: Mapping[str, tuple[int, int]]) -> float | None:
    """The mean of per-class recall over the classes with rows; None without any."""
    recalls = [right / rows for right, rows in classes.values() if rows > 0]
    return sum(recalls) / len(recalls) if recalls else None


def aggregate(
    versions: Iterable[int], metric: str, answers: Mapping[str, Mapping[int, Counts]]
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
    """How much better ``candidate`` did than ``incumbent`` (accuracy or balanced
    accuracy points, or MAE less); None unless the evaluation completed with samples for both."""
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


def check_counts(row: EvaluationRow, version: int, counts: VersionCounts) -> None:
    """``InvalidInput`` naming what is wrong unless ``counts`` can be one site's answer for
    ``version`` under the evaluation's metric (bounds were checked by the model)."""
    where = f"version {version}"
    if counts.count < row.min_samples:
        raise InvalidInput(
            f"{where}: {counts.count} rows is below min_samples {row.min_samples}; refuse instead"
        )
    if row.metric in CLASSIFICATION and (
        counts.total > counts.count or counts.total != int(counts.total)
    ):
        raise InvalidInput(
            f"{where}: correct predictions must be a whole number between 0 and the count "
            f"({counts.count})"
        )
    if row.metric != "balanced_accuracy":
        if counts.classes is not None:
            raise InvalidInput(f"{where}: classes are sent for balanced_accuracy only")
        return
    if counts.classes is None:
        raise InvalidInput(f"{where}: balanced_accuracy needs per-class counts (classes)")
    rows = sum(total for _, total in counts.classes.values())
    right = sum(r for r, _ in counts.classes.values())
    if rows != counts.count or right != counts.total:
        raise InvalidInput(
            f"{where}: per-class counts add up to {right} right of {rows} rows, "
            f"not {int(counts.total)} of {counts.count}"
        )


def stored_counts(stored: Mapping[str, Any]) -> Counts:
    """One version's counts as the store holds them (JSON: classes as ``[right, total]``)."""
    classes = stored.get("classes")
    return Counts(
        int(stored["count"]),
        float(stored["total"]),
        None
        if classes is None
        else {str(name): (int(pair[0]), int(pair[1])) for name, pair in classes.items()},
    )


def build_record(row: EvaluationRow, answers: Sequence[AnswerRow]) -> EvaluationRecord:
    """The stored row and answers as the record callers read (scores computed)."""
    by_site: dict[str, dict[int, Counts]] = {}
    outcomes: dict[str, SiteOutcome] = {}
    for answer in answers:
        if answer.kind == "result":
            counts = {int(v): stored_counts(c) for v, c in answer.scores.items()}
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
