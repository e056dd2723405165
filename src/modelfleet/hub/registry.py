"""The model registry service: push, resolve, alias, download — protocol-free.

A push is validated completely (name, metadata, ONNX graph) before anything is written,
and a failure after the blob was stored removes the blob again unless another version
already used it, so a refused push leaves no rows and no blobs behind.

Crash windows (:mod:`modelfleet.crashpoints`). The blob is published before its version row
commits, so a version row never names a missing blob. A hub killed between the two
(``hub.upload.after_blob``) leaves an unreferenced blob, which the start-up sweep removes
(:mod:`modelfleet.hub.artifact_sweep`). A hub killed after the row committed but before the
alias, the ``model.registered`` event and the answer (``hub.upload.after_row``) has made the
version, and the caller, who saw no answer, pushes again: a push whose bytes and request are
exactly those of the model's latest version is that retry, and answers that version
(setting the alias and telling the event it lacked) instead of adding a duplicate.

Every version registered — pushed by a user or made by a federated job — is told as a
``model.registered`` event once the app has given the registry the event log
(:attr:`Registry.events`), keyed ``model/<name>/<version>/registered`` (versions are never
renumbered), so triggers and webhooks can start from it.

Every alias change goes through :meth:`Registry.set_alias` / :meth:`Registry.delete_alias`
(and a push with an alias), which tell it as ``model.alias_moved`` / ``model.alias_removed``
here rather than in the API: a schedule's action, a pipeline or any other hub code moving an
alias is told like an operator's ``modelfleet model alias``. Setting an alias to the version
it already names tells nothing. The "from" version is read just before the write, so two
writers racing on one alias may both name the same "from" (each event's ``to_version`` is
what it wrote; the alias ends at the last writer's).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from modelfleet.crashpoints import crash_point
from modelfleet.errors import InvalidInput, NotFound
from modelfleet.hub.keys import HubKeys, SignedKeySet
from modelfleet.hub.store import Store
from modelfleet.hub.store.records import ModelRecord, NewVersion, VersionRecord
from modelfleet.refs import ModelRef, check_alias, check_name
from modelfleet.registry.artifacts import ArtifactStore
from modelfleet.registry.manifest import build_manifest, sign_manifest
from modelfleet.registry.onnx_info import inspect_onnx
from modelfleet.registry.signing import key_id, public_key_text

if TYPE_CHECKING:  # hub/events.py imports hub/sites.py, which imports this module
    from modelfleet.hub.events import Events

#: How often a running hub looks for a key set changed by another process.
KEYSET_RECHECK_S = 1.0


@dataclass(frozen=True)
class PushRequest:
    """What a caller may say about a new version besides its bytes."""

    name: str
    training_regions: tuple[str, ...] = ()
    alias: str | None = None
    description: str = ""
    framework: str | None = None
    parent_version: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Upload:
    """An upload already spooled to a local file, with its streaming hash."""

    path: Path
    digest: str
    size: int


def parse_tags(items: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"invalid tag {item!r}: expected key=value")
        tags[check_name(key, "tag key")] = value
    return tags


def parse_metrics(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"metrics must be a JSON object of numbers: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidInput('metrics must be a JSON object such as {"accuracy": 0.97}')
    metrics: dict[str, float] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"metric {key!r} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise InvalidInput(f"metric {key!r} must be finite")
        metrics[check_name(str(key), "metric name")] = float(value)
    return metrics


class Registry:
    """Models and versions on top of a state store and an artifact store."""

    def __init__(self, store: Store, artifacts: ArtifactStore, keys: HubKeys) -> None:
        self.store = store
        self.artifacts = artifacts
        self.keys = keys
        self._keys_checked = 0.0
        #: Where ``model.registered`` is told; set by the app once the log exists.
        self.events: Events | None = None

    def _fresh_keys(self) -> HubKeys:
        """The key set, re-read at most once a second if ``hub key rotate`` (another
        process, or another replica on a shared data directory) changed it."""
        now = time.monotonic()
        if now - self._keys_checked >= KEYSET_RECHECK_S:
            self._keys_checked = now
            self.keys.refresh()
        return self.keys

    def signed_keyset(self) -> SignedKeySet:
        """The signing key set as sites receive it with their desired state."""
        return self._fresh_keys().signed()

    @property
    def public_key(self) -> str:
        """The current signing key's public half (base64 raw bytes)."""
        return public_key_text(self.keys.current.public_key())

    @property
    def key_id(self) -> str:
        return self.keys.current_id

    def push(self, request: PushRequest, upload: Upload, actor: str) -> VersionRecord:
        name = check_name(request.name, "model name")
        if request.alias is not None:
            check_alias(request.alias)
        regions = tuple(
            sorted({check_name(r, "training region") for r in request.training_regions})
        )
        if request.parent_version is not None and request.parent_version < 1:
            raise InvalidInput("parent version must be a positive number")
        info = inspect_onnx(upload.path)
        framework = request.framework or info.framework

        # Always the newest key (one stat): a version pushed right after `hub key rotate` is
        # signed with the new key. One key for the whole version, even mid-rotation.
        self.keys.refresh()
        signing_key = self.keys.current

        def seal(version: int, created_at: datetime) -> tuple[str, str]:
            manifest = build_manifest(
                name=name,
                version=version,
                digest=upload.digest,
                size=upload.size,
                io=info.io,
                opset=info.opset,
                framework=framework,
                training_regions=list(regions),
                parent_version=request.parent_version,
                created_at=created_at,
                key_id=key_id(signing_key),
                metrics=request.metrics or None,
            )
            return sign_manifest(manifest, signing_key)

        new = NewVersion(
            model=name,
            digest=upload.digest,
            size=upload.size,
            io=info.io,
            opset=info.opset,
            framework=framework,
            description=request.description,
            metrics=request.metrics,
            tags=request.tags,
            training_regions=regions,
            parent_version=request.parent_version,
            pushed_by=actor,
        )
        # Also on a retry: re-putting a stored blob re-checks its bytes, and puts back one
        # that went missing, so the version answered below can always be downloaded.
        created = self.artifacts.put_file(upload.path, upload.digest)
        record = self._retried(new)
        if record is None:
            crash_point("hub.upload.after_blob")
            try:
                record = self.store.models.create_version(new, seal)
            except BaseException:
                if created and not self.store.models.digest_referenced(upload.digest):
                    self.artifacts.delete(upload.digest)
                raise
            crash_point("hub.upload.after_row")
        moved_from: int | None = None
        if request.alias is not None:  # set before model.registered, as a reader expects
            moved_from = self.store.models.resolve_alias(name, request.alias)
            self.store.models.set_alias(name, request.alias, record.version)
        if self.events is not None:
            self.events.emit(
                "model.registered",
                f"{name}:{record.version}",
                {
                    "model": name,
                    "version": record.version,
                    "digest": record.digest,
                    "size": record.size,
                    "framework": record.framework,
                    "training_regions": list(record.training_regions),
                    "parent_version": record.parent_version,
                    "alias": request.alias,
                    "tags": record.tags,
                    "metrics": record.metrics,
                    "by": actor,
                },
                key=f"model/{name}/{record.version}/registered",
            )
        if request.alias is not None:  # told after model.registered: the version exists first
            self._tell_moved(name, request.alias, moved_from, record.version, actor)
        return record

    def _retried(self, new: NewVersion) -> VersionRecord | None:
        """The model's latest version if ``new`` is exactly it again (same bytes, same
        request, same pusher): the retry of a push whose answer was lost (the hub died
        after committing the row), which must not make a second, identical version."""
        model = self.store.models.get_model(new.model)
        if model is None:
            return None
        latest = self.store.models.get_version(new.model, model.latest_version)
        if latest is None:
            return None
        same = (
            latest.digest == new.digest
            and latest.framework == new.framework
            and latest.description == new.description
            and latest.metrics == new.metrics
            and latest.tags == new.tags
            and latest.training_regions == new.training_regions
            and latest.parent_version == new.parent_version
            and latest.pushed_by == new.pushed_by
        )
        return latest if same else None

    def model(self, name: str) -> ModelRecord:
        record = self.store.models.get_model(check_name(name, "model name"))
        if record is None:
            raise NotFound(f"model {name!r} does not exist")
        return record

    def versions(self, name: str) -> list[VersionRecord]:
        """Every version of a model, ascending; empty if the model does not exist."""
        return self.store.models.list_versions(name)

    def version(self, name: str, number: int) -> VersionRecord | None:
        """One version exactly as numbered (no alias, no "latest"); None if absent."""
        return self.store.models.get_version(name, number)

    def read_artifact(self, digest: str) -> bytes:
        """A blob's whole content, for the hub's own use of a model it holds (the
        federation coordinator reads a base model's weights); downloads stream instead."""
        return b"".join(self.artifacts.read_range(digest, 0, None))

    def resolve(self, ref: ModelRef) -> VersionRecord:
        """The version a reference names; the latest when it names neither."""
        model = self.model(ref.name)
        version = ref.version
        if ref.alias is not None:
            version = self.store.models.resolve_alias(ref.name, ref.alias)
            if version is None:
                known = ", ".join(sorted(model.aliases)) or "none"
                raise NotFound(f"model {ref.name!r} has no alias {ref.alias!r} (aliases: {known})")
        if version is None:
            version = model.latest_version
        record = self.store.models.get_version(ref.name, version)
        if record is None:
            raise NotFound(
                f"model {ref.name!r} has no version {version} (latest is {model.latest_version})"
            )
        return record

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        actor: str = "hub",
        before: int | None = None,
        key: str | None = None,
    ) -> None:
        """Point ``name@alias`` at ``version`` (creating the alias) and tell
        ``model.alias_moved`` when that changed where it points; ``actor`` is the event's
        ``by`` (the caller's actor in the API; hub code names itself). A step that may run
        again after a crash (a pipeline's promotion) passes the version it first saw the
        alias on as ``before`` and a ``key``, so the move is told once, even when the first
        attempt moved the alias and died before telling it."""
        self.model(name)
        check_alias(alias)
        if self.store.models.get_version(name, version) is None:
            raise NotFound(f"model {name!r} has no version {version}")
        seen = self.store.models.resolve_alias(name, alias)
        self.store.models.set_alias(name, alias, version)
        self._tell_moved(name, alias, seen if before is None else before, version, actor, key)

    def delete_alias(self, name: str, alias: str, *, actor: str = "hub") -> None:
        """Remove ``name@alias`` (its version stays) and tell ``model.alias_removed``."""
        self.model(name)
        before = self.store.models.resolve_alias(name, check_alias(alias))
        if not self.store.models.delete_alias(name, alias):
            raise NotFound(f"model {name!r} has no alias {alias!r}")
        if self.events is not None:
            self.events.emit(
                "model.alias_removed",
                f"{name}@{alias}",
                {"model": name, "alias": alias, "from_version": before, "by": actor},
            )

    def _move(self, name: str, alias: str, version: int, actor: str) -> None:
        before = self.store.models.resolve_alias(name, alias)
        self.store.models.set_alias(name, alias, version)
        self._tell_moved(name, alias, before, version, actor)

    def _tell_moved(
        self,
        name: str,
        alias: str,
        before: int | None,
        version: int,
        actor: str,
        key: str | None = None,
    ) -> None:
        if self.events is None or before == version:
            return
        # No natural key unless the caller names one: moving 2 -> 3 -> 2 -> 3 is four
        # changes, each told.
        self.events.emit(
            "model.alias_moved",
            f"{name}@{alias}",
            {
                "model": name,
                "alias": alias,
                "from_version": before,
                "to_version": version,
                "by": actor,
            },
            key=key,
        )
