"""The store's repository interfaces, one module per domain (see :mod:`..base`).

Each is an ABC the SQL implementations in ``sql/`` subclass; services depend on these
and on the records only, and the contract suite in ``tests/hub/store/`` runs against
every implementation.
"""

from modelfleet.hub.store.repos.access import AuditRepo, TokenRepo
from modelfleet.hub.store.repos.deployments import DeploymentRepo
from modelfleet.hub.store.repos.evaluations import EvaluationRepo
from modelfleet.hub.store.repos.events import EventRepo
from modelfleet.hub.store.repos.federation import FederationRepo
from modelfleet.hub.store.repos.models import ModelRepo, Sealer
from modelfleet.hub.store.repos.sites import AssignmentItem, AssignmentRepo, SiteRepo
from modelfleet.hub.store.repos.telemetry import TelemetryRepo

__all__ = [
    "AssignmentItem",
    "AssignmentRepo",
    "AuditRepo",
    "DeploymentRepo",
    "EvaluationRepo",
    "EventRepo",
    "FederationRepo",
    "ModelRepo",
    "Sealer",
    "SiteRepo",
    "TelemetryRepo",
    "TokenRepo",
]
