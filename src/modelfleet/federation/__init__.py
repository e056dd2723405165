"""Federated learning without transport or persistence: what the hub and the sites share.

Strategies (one module per algorithm), model specs, local training, round aggregation,
job configuration, the binary wire format and the in-process simulation. It imports
nothing from :mod:`modelfleet.hub`, :mod:`modelfleet.site` or :mod:`modelfleet.routing`
(a test checks it), so a site, the hub and a benchmark use the same code; the hub's
coordinator role is :mod:`modelfleet.hub.federation`.
"""
