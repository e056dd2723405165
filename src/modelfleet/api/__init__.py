"""The hub API's wire shapes, once, for both sides: the hub declares its routes'
``response_model`` with them (so ``/openapi.json`` documents every answer) and
:class:`~modelfleet.hub_client.HubClient` parses each answer into them.

Split by domain: ``models`` (registry, reference profiles, drift thresholds), ``access``
(tokens, audit), ``sites``, ``deployments`` (plans, overrides, policies, fleet files),
``rollouts``, ``telemetry`` (health, drift) and ``federation``. Every record keeps fields
a newer hub adds (``extra="allow"``); free-form parts (assignment params, gates, consents)
are typed JSON mappings on purpose.

Layering: imports only pydantic and :mod:`modelfleet.errors`, never ``hub`` or ``site``, so
the SDK can use it without the hub installed in the picture.
"""

from __future__ import annotations

from modelfleet.api._base import ErrorBody, ErrorDetail, Free, Record
from modelfleet.api.access import AuditEntry, Token, TokenCreated, TokenIn
from modelfleet.api.deployments import (
    ApplyChange,
    ApplyResult,
    Deployment,
    DeployResult,
    Override,
    Plan,
    PlanPolicy,
    PlanViolation,
    Policy,
    PolicyChange,
    PolicyChanges,
)
from modelfleet.api.federation import Consents, FederatedJob, FederatedRound
from modelfleet.api.models import (
    AliasIn,
    DriftThresholds,
    Model,
    ModelDetail,
    ReferenceProfile,
    SigningKey,
    Version,
)
from modelfleet.api.rollouts import ControllerStatus, Rollout, RolloutSite, RolloutWave
from modelfleet.api.sites import Assignment, AssignmentsRevision, Site, SiteEnrollment, SiteModel
from modelfleet.api.telemetry import (
    DriftReport,
    DriftResult,
    FleetTraffic,
    SiteHealth,
    TelemetryStatus,
)

__all__ = [
    "AliasIn",
    "ApplyChange",
    "ApplyResult",
    "Assignment",
    "AssignmentsRevision",
    "AuditEntry",
    "Consents",
    "ControllerStatus",
    "DeployResult",
    "Deployment",
    "DriftReport",
    "DriftResult",
    "DriftThresholds",
    "ErrorBody",
    "ErrorDetail",
    "FederatedJob",
    "FederatedRound",
    "FleetTraffic",
    "Free",
    "Model",
    "ModelDetail",
    "Override",
    "Plan",
    "PlanPolicy",
    "PlanViolation",
    "Policy",
    "PolicyChange",
    "PolicyChanges",
    "Record",
    "ReferenceProfile",
    "Rollout",
    "RolloutSite",
    "RolloutWave",
    "SigningKey",
    "Site",
    "SiteEnrollment",
    "SiteHealth",
    "SiteModel",
    "TelemetryStatus",
    "Token",
    "TokenCreated",
    "TokenIn",
    "Version",
]
