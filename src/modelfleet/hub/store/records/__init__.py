"""The plain records the store hands out, one module per domain.

Every record is a frozen dataclass detached from any database session, with timezone-aware
UTC datetimes, so services and routers never hold a connection or a row object. This
package re-exports them all: callers write ``from modelfleet.hub.store.records import
SiteRecord`` whichever domain a record belongs to.
"""

from modelfleet.hub.store.records.access import AuditRecord, TokenRecord
from modelfleet.hub.store.records.deployments import (
    ACTIVE_STATES,
    DeploymentRecord,
    OverrideRecord,
    PolicyRecord,
    RolloutChange,
    RolloutRecord,
)
from modelfleet.hub.store.records.evaluations import AnswerRow, EvaluationRow
from modelfleet.hub.store.records.events import DeliveryRecord, EventRecord, WebhookRecord
from modelfleet.hub.store.records.federation import JobRow, NewJob, RoundRow, UpdateRow
from modelfleet.hub.store.records.models import ModelRecord, NewVersion, VersionRecord
from modelfleet.hub.store.records.sites import Assignment, NewCertificate, SiteRecord
from modelfleet.hub.store.records.telemetry import IngestResult, NewWindow, Totals, WindowRecord

__all__ = [
    "ACTIVE_STATES",
    "AnswerRow",
    "Assignment",
    "AuditRecord",
    "DeliveryRecord",
    "DeploymentRecord",
    "EvaluationRow",
    "EventRecord",
    "IngestResult",
    "JobRow",
    "ModelRecord",
    "NewCertificate",
    "NewJob",
    "NewVersion",
    "NewWindow",
    "OverrideRecord",
    "PolicyRecord",
    "RolloutChange",
    "RolloutRecord",
    "RoundRow",
    "SiteRecord",
    "TokenRecord",
    "Totals",
    "UpdateRow",
    "VersionRecord",
    "WebhookRecord",
    "WindowRecord",
]
