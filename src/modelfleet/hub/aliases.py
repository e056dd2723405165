"""Moving an alias: the one code path the models API and the pipelines share.

An alias move is what a deployment following the alias reacts to, so whoever moves it —
an operator (``PUT /api/v1/models/{name}/aliases/{alias}``) or a pipeline whose candidate
won — is told as ``model.alias_moved`` by :meth:`Registry.set_alias`; :func:`move_alias`
adds the audit record the API's ``audited`` writes, for hub code moving an alias.
"""

from __future__ import annotations

from modelfleet.errors import ModelfleetError
from modelfleet.hub.registry import Registry
from modelfleet.hub.store import Store


def move_alias(
    store: Store,
    registry: Registry,
    name: str,
    alias: str,
    version: int,
    actor: str,
    *,
    before: int | None = None,
    key: str | None = None,
) -> None:
    """Point ``name@alias`` at ``version`` as ``actor``, audited (``model.alias``, as the
    API records it) and told. ``before``: the version the caller saw the alias on (for a
    resumed step whose first attempt already moved it); read now when None."""
    seen = store.models.resolve_alias(name, alias)
    try:
        registry.set_alias(
            name,
            alias,
            version,
            actor=actor,
            before=before if before is not None else seen,
            key=key,
        )
    except ModelfleetError as exc:
        store.audit.record(
            actor=actor, action="model.alias", object=f"{name}@{alias}", outcome=exc.code,
            detail=exc.message,
        )  # fmt: skip
        raise
    store.audit.record(
        actor=actor, action="model.alias", object=f"{name}@{alias}", outcome="ok",
        detail=f"-> {version}",
    )  # fmt: skip
