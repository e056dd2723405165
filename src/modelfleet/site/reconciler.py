"""Converge what a site serves towards its desired state, safely.

For each model to (re)activate: check the manifest's signature against the pinned hub key,
download the blob (resuming) unless an intact copy is cached, check its sha256 against the
manifest *before* anything reads it as a model, create the onnxruntime session, warm it up,
then swap atomically. Any failure leaves the current version serving, is reported with a
reason code, and is retried with exponential back-off and jitter. The hub is needed to
change things, never to keep serving: the last good models are restored from the local cache
at start-up.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelfleet.crashpoints import crash_point
from modelfleet.errors import DowngradeRefused, ModelfleetError, VerificationError
from modelfleet.loops import Backoff
from modelfleet.registry.desired_state import DesiredModel, downgrade_refusal
from modelfleet.registry.keyset import KeySet, accept_keyset
from modelfleet.registry.manifest import verify_manifest
from modelfleet.serving_params import check_serving_params
from modelfleet.site.cache import BlobCache
from modelfleet.site.floors import DesiredStateFloor
from modelfleet.site.policy import enforce_site_policy
from modelfleet.site.repository import ModelRepository
from modelfleet.site.runtime import LoadedModel
from modelfleet.site.state import SiteState

log = logging.getLogger("modelfleet.site")


@dataclass
class ModelStatus:
    """What the agent reports per model."""

    name: str
    desired_version: int | None = None
    active_version: int | None = None
    state: str = "pending"  # downloading | loading | ready | failed
    error: dict[str, str] | None = None
    attempts: int = 0
    next_try: float = 0.0

    def as_report(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "desired_version": self.desired_version,
            "active_version": self.active_version,
            "state": self.state,
            "error": self.error,
        }


@dataclass
class Reconciler:
    state: SiteState
    cache: BlobCache
    repository: ModelRepository
    #: The hub's signing keys this site pinned (one key for sites enrolled before key sets).
    public_key: str | KeySet
    download: Callable[[str, Path, int], None]  # (blob URL path, partial file, size)
    #: The anti-rollback floor: verifies each signed desired state (site/floors.py).
    floors: DesiredStateFloor
    backoff: Backoff = field(default_factory=Backoff)
    intra_op_threads: int = 1
    statuses: dict[str, ModelStatus] = field(default_factory=dict)
    applied_revision: int | None = None
    # The site's local governance file (SiteSettings.policy_file); see site/policy.py.
    policy_file: Path | None = None
    #: Called with a newer key set accepted from the hub, to keep it across restarts.
    on_keys: Callable[[KeySet], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _keys_seen: str = ""
    #: Per model, the last signature the hub offered for the active version (taken or
    #: refused): a re-signed manifest is checked once, not on every pass.
    _signatures_seen: dict[str, str] = field(default_factory=dict)

    # --- start-up from cache -------------------------------------------------------------

    def restore(self, only: set[str] | None = None) -> list[str]:
        """Serve the last good version of every model from the cache (of those in ``only``,
        the models the saved desired state lists, when it verifies); hub not needed."""
        restored = []
        for good in self.state.last_good().values():
            if only is not None and good.name not in only:
                continue  # unassigned by a signed state; kept in the cache, not served
            try:
                manifest = verify_manifest(
                    good.manifest,
                    good.signature,
                    self.public_key,
                    blob=self.cache.path(good.digest),
                )
                # The local policy may have tightened since: it applies to cached models too.
                enforce_site_policy(self.policy_file, manifest)
                self._load_and_swap(good.name, int(manifest["version"]), good.digest, good.params)
            except (ModelfleetError, OSError) as exc:
                log.warning("cached %s:%s not restored: %s", good.name, good.version, exc)
                continue
            self.statuses[good.name] = ModelStatus(
                good.name, desired_version=good.version, active_version=good.version, state="ready"
            )
            restored.append(f"{good.name}:{good.version}")
        return restored

    def listed(self, doc: dict[str, Any]) -> set[str] | None:
        """The models a saved desired state lists, if it still verifies; None otherwise."""
        with self._lock:
            desired = self.floors.accept(doc.get("signed"), self.public_key)
        return None if desired is None else {m.name for m in desired.models}

    def verifies(self, doc: dict[str, Any]) -> bool:
        """Whether the site would take ``doc`` now (worth saving for a restart), without
        taking it: a forged or replayed answer must not replace the saved state."""
        keys = self.public_key
        offered = doc.get("keyset")
        if isinstance(keys, KeySet) and isinstance(offered, dict):
            with contextlib.suppress(ModelfleetError):  # the set this document may bring
                keys = accept_keyset(keys, str(offered.get("text")), str(offered.get("signature")))
        try:
            self.floors.verify(doc.get("signed"), keys)
        except ModelfleetError:
            return False
        return True

    # --- convergence ---------------------------------------------------------------------

    def apply(self, doc: dict[str, Any], *, now: float | None = None) -> bool:
        """One pass towards ``doc``; returns True when something changed (worth a report)."""
        with self._lock:
            return self._apply(doc, time.monotonic() if now is None else now)

    def _apply(self, doc: dict[str, Any], now: float) -> bool:
        self._accept_keys(doc.get("keyset"))
        desired = self.floors.accept(doc.get("signed"), self.public_key)
        if desired is None:
            return self.floors.refusal_is_new()
        changed = self.floors.refusal_is_new()  # a refusal that ended is news too
        wanted = {m.name: m for m in desired.models}
        for name, item in wanted.items():
            status = self.statuses.setdefault(name, ModelStatus(name))
            if status.desired_version != item.version:
                status.desired_version = item.version
                status.attempts, status.next_try, status.error = 0, 0.0, None
                changed = True
            if status.active_version == item.version and status.state == "ready":
                self._take_new_signature(item)
                continue
            if now < status.next_try:
                continue
            changed = True
            try:
                self._activate(item, status)
            except Exception as exc:  # one model's failure, whatever it is, is its own
                if not isinstance(exc, ModelfleetError):
                    log.exception("%s:%s failed unexpectedly", name, item.version)
                    exc = ModelfleetError(f"unexpected error: {exc!r}"[:2000])
                status.attempts += 1
                status.state = "failed"
                error = {"code": exc.code, "message": exc.message}
                # Once per version and reason: the retries of one failure are DEBUG.
                level = logging.DEBUG if status.error == error else logging.WARNING
                status.error = error
                status.next_try = now + self.backoff.delay(status.attempts)
                log.log(
                    level,
                    "model %s:%s not activated (%s, attempt %d): %s; %s keeps serving",
                    name,
                    item.version,
                    exc.code,
                    status.attempts,
                    exc.message,
                    "nothing" if status.active_version is None else f"v{status.active_version}",
                )
        # A model the signed state no longer lists is unloaded. Its last-good copy and cached
        # blob go only if the state still lists others or is a signed decommission: an empty
        # list alone never leaves the site unable to serve from cache.
        keep_cache = not desired.models and not desired.decommission
        for name in [n for n in self.statuses if n not in wanted]:
            self.repository.remove(name)
            log.info("model %s unassigned by the hub: no longer served", name)
            self.floors.forget(name)  # the hub unassigned it: its floor went with the row
            if not keep_cache:
                self.state.forget(name)
            del self.statuses[name]
            changed = True
        if desired.decommission and self.state.last_good():
            # Also the last-good copies a restart did not load (restore takes only what
            # the saved state lists): a decommissioned site keeps no model at all.
            for name in self.state.last_good():
                self.state.forget(name)
            log.warning("decommissioned by the hub: every cached model deleted")
            changed = True
        if all(s.state == "ready" for s in self.statuses.values()):
            self.applied_revision = desired.revision
        if (changed or desired.decommission) and not keep_cache:
            self._collect_garbage(wanted)
        return changed

    def _accept_keys(self, offered: object) -> None:
        """Take a newer signing key set from the desired state, before its manifests are
        verified: a rotation reaches the site with (or before) the first version the new
        key signed. Only a set that :func:`accept_keyset` admits replaces the pinned one (a
        new key endorsed by a trusted one, signed by its current key, no older revision);
        anything else is logged and the pinned set stays."""
        if not isinstance(offered, dict) or not isinstance(self.public_key, KeySet):
            return
        text, signature = offered.get("text"), offered.get("signature")
        if not isinstance(text, str) or not isinstance(signature, str) or text == self._keys_seen:
            return
        try:
            keys = accept_keyset(self.public_key, text, signature)
        except VerificationError as exc:
            log.warning("signing key set from the hub refused: %s", exc.message)
            return
        self._keys_seen = text
        if keys == self.public_key:
            return
        self.public_key = keys
        if self.on_keys is not None:
            self.on_keys(keys)
        log.info("signing key set revision %d accepted (keys %s)", keys.revision, keys.ids())

    def _take_new_signature(self, item: DesiredModel) -> None:
        """The hub re-signed the active version (`hub key resign`, before it retires the
        old key): keep serving the loaded model, and keep the new manifest as the last
        good one, so a restart verifies the cache with a key the site will still trust.
        The new manifest must verify and describe the same name, version and blob."""
        name, signature = item.name, item.signature
        if self._signatures_seen.get(name) == signature:
            return
        self._signatures_seen[name] = signature
        good = self.state.last_good().get(name)
        if good is None or good.signature == signature or good.version != item.version:
            return
        try:
            manifest = verify_manifest(item.manifest, signature, self.public_key)
            same = (manifest["name"], manifest["version"], manifest["digest"]) == (
                good.name,
                good.version,
                f"sha256:{good.digest}",
            )
            if not same:
                raise VerificationError("the re-signed manifest describes another model or blob")
        except ModelfleetError as exc:
            log.warning("new signature of %s:%s refused: %s", name, good.version, exc.message)
            return
        self.state.record_good(
            name, good.version, good.digest, item.manifest, signature, good.params
        )
        log.info("%s:%s re-signed (key %s)", name, good.version, manifest.get("key_id"))

    def _activate(self, item: DesiredModel, status: ModelStatus) -> None:
        name, version = item.name, item.version
        # No version below one this site ran, unless the hub signed it as a rollback.
        refusal = downgrade_refusal(item, self.floors.versions)
        if refusal is not None:
            raise DowngradeRefused(refusal)
        # The signature is checked first: an unsigned or foreign manifest is never downloaded.
        manifest = verify_manifest(item.manifest, item.signature, self.public_key)
        digest = str(manifest["digest"]).removeprefix("sha256:")
        if manifest["name"] != name or manifest["version"] != version:
            raise VerificationError(
                f"manifest describes {manifest['name']}:{manifest['version']}, "
                f"desired state says {name}:{version}"
            )
        # Defense in depth: the site's own residency rules, before any byte is fetched.
        enforce_site_policy(self.policy_file, manifest)
        size = int(manifest["size"])
        # A cached blob is hashed again before it is loaded: the file may have changed on
        # disk since it was committed (restore() refuses such a blob; this refuses it too).
        if self.cache.has(digest) and not self.cache.intact(digest, size):
            log.warning(
                "cached blob of %s:%s is damaged: discarded, fetching it again", name, version
            )
        if not self.cache.has(digest):
            status.state = "downloading"
            self.download(f"/api/v1/blobs/{digest}", self.cache.partial_path(digest), size)
            self.cache.commit(digest, size)  # DigestMismatch on bad bytes
            # Verified and committed, not yet loaded: a restart finds the blob cached (and
            # hashes it again) instead of fetching it again.
            crash_point("site.reconcile.after_verify")
        status.state = "loading"
        params = dict(item.params)
        self._load_and_swap(name, version, digest, params)
        # Serving the new version from memory, state.db still naming the old one as last
        # good: a restart restores the old version, then converges to the new one again.
        crash_point("site.reconcile.mid_swap")
        self.state.record_good(name, version, digest, item.manifest, item.signature, params)
        self.floors.ran(name, version)
        previous, status.active_version = status.active_version, version
        status.state = "ready"
        status.error = None
        status.attempts = 0
        if previous is None:
            log.info("model %s:%s activated", name, version)
        elif previous != version:
            log.info("model %s swapped: v%s -> v%s", name, previous, version)
        else:
            log.info("model %s:%s reloaded", name, version)

    def _load_and_swap(self, name: str, version: int, digest: str, params: dict[str, Any]) -> None:
        from modelfleet.site.batcher import BatchPolicy  # the server's module; kept local

        # Refuse bad serving parameters before loading: the old version keeps serving, and
        # only this model fails (checked again here: the hub's document is hostile input).
        params = check_serving_params(params, f"{name}:{version} params")
        BatchPolicy.from_params(params)
        model = LoadedModel.load(
            self.cache.path(digest),
            name=name,
            version=version,
            digest=digest,
            intra_op_threads=int(params.get("intra_op_threads", self.intra_op_threads)),
            params=params,
        )
        model.warm_up()
        self.repository.activate(model)

    def _collect_garbage(self, wanted: dict[str, DesiredModel]) -> None:
        # Keep the last good version of every model, whatever is loaded, and what is wanted.
        keep = {m.digest for m in self.state.last_good().values()}
        for name, snapshot in self.repository.snapshot().items():
            for version in snapshot["loaded"]:
                keep.add(self.repository.get(name, version).digest)
        keep.update(item.digest for item in wanted.values() if item.digest)
        try:
            self.cache.gc(keep)
        except (ModelfleetError, OSError) as exc:
            log.warning("cache clean-up failed: %s", exc)

    def report_models(self) -> list[dict[str, Any]]:
        with self._lock:
            return [s.as_report() for s in sorted(self.statuses.values(), key=lambda s: s.name)]
