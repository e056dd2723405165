"""The hub's side of federated learning: the coordinator role.

The algorithms (strategies, specs, local training, rounds, the wire format, the
simulation) live in :mod:`modelfleet.federation`, which knows nothing of the hub; this
package runs them against the hub's store, registry and sites: the persisted job/round
state machine (``coordinator``), the open-task snapshot sites poll (``taskboard``), the
result and per-site variants registered as model versions (``registration``,
``personalization``) and what operators see (``views``).
"""
