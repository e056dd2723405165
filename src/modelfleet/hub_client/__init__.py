"""``HubClient``: the SDK's typed access to the hub API (what the CLI is built on).

Every answer is parsed into its record from :mod:`modelfleet.api` (the shapes the hub
declares as its routes' ``response_model``), so a caller reads ``site.online``, not
``site["online"]``, and mypy checks it. The calls live in modules by area
(:mod:`.client`: registry, sites, access, telemetry, deployments, federated learning;
:mod:`.loop`: events, webhooks, evaluations, schedules, triggers, pipelines) over one
transport (:mod:`.base`).
"""

from modelfleet.hub_client.client import HubClient

__all__ = ["HubClient"]
