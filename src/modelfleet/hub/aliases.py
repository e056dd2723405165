"""Moving an alias: the one code path the models API and the pipelines share.

An alias move is what a deployment following the alias reacts to, so whoever moves it —
an operator (``PUT /api/v1/models/{name}/aliases/{alias}``) or a pipeline whose candidate
won — goes through :func:`alias_moved` for the ``model.alias_moved`` event, and
:func:`move_alias` when it also needs the audit record the API's ``audited`` writes.
"""

from __future__ import annotations

from modelfleet.errors import ModelfleetError
from modelfleet.hub.events import Events
from modelfleet.hub.registry import Registry
from modelfleet.hub.store import Store


def alias_moved(
    events: Events,
    name: str,
    alias: str,
    before: int | None,
    version: int,
    actor: str,
    *,
    key: str | None = None,
) -> None:
    """Tell ``model.alias_moved`` (a deployment following the alias reacts on its own, in
    the rollout controller's tick; the event is for people and webhooks). Nothing when the
    alias already named ``version``. ``key`` makes a repeated call (a resumed step) tell
    it once."""
    if before == version:
        return
    events.emit(
        "model.alias_moved",
        f"{name}@{alias}",
        {"model": name, "alias": alias, "from_version": before, "to_version": version, "by": actor},
        key=key,
    )


def move_alias(
    store: Store,
    registry: Registry,
    events: Events,
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
        registry.set_alias(name, alias, version)
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
    alias_moved(
        events, name, alias, before if before is not None else seen, version, actor, key=key
    )
