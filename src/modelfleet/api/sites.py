"""Sites, their enrollment and their model assignments."""

from __future__ import annotations

from datetime import datetime

from pydantic import JsonValue

from modelfleet.api._base import Free, Record

__all__ = ["Assignment", "AssignmentsRevision", "Site", "SiteEnrollment", "SiteModel"]


class SiteModel(Record):
    """One model on a site: what the hub assigned against what the site reports.

    ``active_version`` and ``error`` (``{"code", "message"}``) come from the site's own
    report, which the hub passes through unchecked, hence typed as JSON."""

    name: str
    assigned_version: int | None
    ref: str | None
    active_version: JsonValue
    state: JsonValue
    error: JsonValue


class Site(Record):
    """The operator's picture of a site: labels, liveness, desired against reported.

    ``applied_revision``, ``agent_version``, ``uptime_s``, ``url`` and
    ``desired_state_refused`` (why the site refused the last desired state it received,
    None when it took it) are the site's last report as it sent it (None before its
    first), hence typed as JSON."""

    name: str
    labels: dict[str, str]
    online: bool
    enrolled: bool
    enrolled_at: datetime | None
    enrollment_expires_at: datetime | None
    last_seen: datetime | None
    revision: int
    applied_revision: JsonValue
    agent_version: JsonValue
    uptime_s: JsonValue
    url: JsonValue
    desired_state_refused: JsonValue = None
    #: Per store (``spool``, ``state``, ``cache``) whose disk was full since the site
    #: started: ``{"full", "full_since", "lost", "lost_in_episode", "episodes", "message"}``
    #: as the site reported it (docs/monitoring.md).
    storage: JsonValue = None
    #: When the site was decommissioned (told to wipe its models and cache); None while
    #: it is in service.
    decommissioned_at: datetime | None = None
    models: list[SiteModel]
    created_at: datetime


class SiteEnrollment(Site):
    """A site just added (or re-issued): its one-time enrollment token is shown once."""

    enrollment_token: str


class Assignment(Record):
    site: str
    model: str
    version: int
    ref: str
    params: Free


class AssignmentsRevision(Record):
    """The answer to replacing a site's assignments: the desired-state revision now."""

    site: str
    revision: int
