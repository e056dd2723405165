"""The hub's tables as SQLAlchemy Core objects, one module per domain, on one ``metadata``.

Importing this package imports every table module, so ``metadata`` describes the whole
database: the Alembic environment and the migration consistency test rely on that. The
query code imports the tables it needs from their domain module.
"""

from modelfleet.hub.store.schema import (
    access,
    accuracy,
    deployments,
    evaluations,
    events,
    federation,
    models,
    pipelines,
    schedules,
    sites,
    telemetry,
)
from modelfleet.hub.store.schema.base import metadata

__all__ = [
    "access",
    "accuracy",
    "deployments",
    "evaluations",
    "events",
    "federation",
    "metadata",
    "models",
    "pipelines",
    "schedules",
    "sites",
    "telemetry",
]
