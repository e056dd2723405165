"""The state store interface: one :class:`Store` holding every repository.

The store groups small repositories, one per kind of object (``repos/``), so no single
interface grows dozens of methods, and builds them all in one place: a service is handed
the store and takes the repositories it owns from it, never constructing one itself.
Which service owns which repository:

- ``models``: the registry (``hub/registry.py``);
- ``tokens``, ``audit``: authentication, the tokens API and site enrollment (which
  issues and revokes a site's token); every router writes the audit log;
- ``sites``, ``assignments``: the sites service; the deployments service writes
  ``assignments`` too, the low-level primitive desired state is derived into;
- ``deployments``: the deployments service and the rollout controller;
- ``telemetry``: the telemetry service, the rollout gate source and retention;
- ``federation``: the federation coordinator (``hub/federation/``);
- ``events``: the events service (``hub/events.py``): the event log and webhook delivery;
- ``evaluations``: the evaluations service (``hub/evaluations.py``).

Another service's data is asked for through that service's methods
(``Sites.list()``, ``Registry.versions(name)``), never through its ``.store``.

Implementations: :class:`~.sql.sqlite.SqliteStore` (embedded default) and
:class:`~.sql.postgres.PostgresStore` (scale-out); both pass the same contract suite in
``tests/hub/store/``. All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime

from modelfleet.hub.store.repos.access import AuditRepo, TokenRepo
from modelfleet.hub.store.repos.accuracy import AccuracyRepo
from modelfleet.hub.store.repos.deployments import DeploymentRepo
from modelfleet.hub.store.repos.evaluations import EvaluationRepo
from modelfleet.hub.store.repos.events import EventRepo
from modelfleet.hub.store.repos.federation import FederationRepo
from modelfleet.hub.store.repos.models import ModelRepo
from modelfleet.hub.store.repos.pipelines import PipelineRepo
from modelfleet.hub.store.repos.schedules import ScheduleRepo
from modelfleet.hub.store.repos.sites import AssignmentRepo, SiteRepo
from modelfleet.hub.store.repos.telemetry import TelemetryRepo


class Leadership(ABC):
    """Which hub process runs a background loop (the rollout controller, the federated
    coordinator): polled by that loop, ``poll()`` says whether this process leads now.

    Leadership is an efficiency measure, not the safety net: every transition of a
    rollout or a federated round is a compare-and-set, so two loops running for a
    moment cannot apply conflicting decisions.
    """

    role: str
    #: Whether this process led at the last poll, and since when.
    leader: bool
    since: datetime | None

    @property
    @abstractmethod
    def backend(self) -> str:
        """How leaders are elected, for the operator (e.g. an advisory lock)."""

    @abstractmethod
    def poll(self) -> bool:
        """True if this process leads ``role`` now (taking the lead when it is free)."""

    @abstractmethod
    def release(self) -> None:
        """Give leadership up (at shutdown), so another process takes it at once."""


class Store(ABC):
    """The hub's persistent state: every repository, built together on one database."""

    models: ModelRepo
    tokens: TokenRepo
    audit: AuditRepo
    sites: SiteRepo
    assignments: AssignmentRepo
    deployments: DeploymentRepo
    telemetry: TelemetryRepo
    federation: FederationRepo
    events: EventRepo
    evaluations: EvaluationRepo
    accuracy: AccuracyRepo
    #: Schedules, triggers and their fires (hub/schedules.py, hub/triggers.py).
    schedules: ScheduleRepo
    #: Pipelines and their runs (hub/pipelines.py).
    pipelines: PipelineRepo

    @property
    @abstractmethod
    def url(self) -> str:
        """The database URL with any password masked."""

    @abstractmethod
    def now(self) -> datetime:
        """The timestamp for rows written now; one place to change for a fake clock."""

    @abstractmethod
    def leadership(self, role: str) -> Leadership:
        """A fresh leadership contender for ``role`` among the hubs on this database."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def ping(self) -> None:
        """Reach the database once (the hub's readiness probe); ``StoreError`` if it
        cannot, so a load balancer stops sending requests that could only get a 503."""
