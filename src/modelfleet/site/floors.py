"""What a site will accept as its next desired state: the anti-rollback floor.

The hub signs each site's whole desired state (:mod:`modelfleet.registry.desired_state`).
This module is the site's side of that contract: it verifies each document the hub sends,
and remembers, across restarts (in ``state.db``), the highest revision it accepted and the
version of each model it last ran. A replayed older document, one for another site, one
delivered after its expiry, or one that was altered on the way is refused as a whole, and
the site goes on with the state it had; a model entry below the version the site ran is
refused on its own unless the hub marked it, signed, as a rollback.

Re-enrolling a site (an operator's act, with a new enrollment token) starts it afresh:
a hub restored from an older backup, whose revisions went back, is recovered that way.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from modelfleet.errors import InsufficientStorage, ModelfleetError, VerificationError
from modelfleet.registry.desired_state import DesiredState, verify_desired_state
from modelfleet.registry.keyset import KeySet
from modelfleet.registry.signing import load_public_key
from modelfleet.site.state import SiteState

__all__ = ["DesiredStateFloor"]

log = logging.getLogger("modelfleet.site")

_KEY = "desired.floor"


@dataclass
class DesiredStateFloor:
    """The accepted revision and per-model versions, kept in the site's state database."""

    state: SiteState
    site: str
    revision: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    #: Why the last document was refused (None: it was accepted), for the site's report.
    refusal: str | None = None
    _reported: str | None = None
    #: The floor changed but a full disk refused the write: written again on the next call.
    unsaved: bool = False

    @classmethod
    def load(cls, state: SiteState, site: str) -> DesiredStateFloor:
        floor = cls(state, site)
        saved = state.get(_KEY)
        if saved is None:
            return floor
        try:
            doc = json.loads(saved)
            floor.revision = int(doc["revision"])
            floor.versions = {str(k): int(v) for k, v in doc["versions"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            # Our own file, damaged: refusing every state would brick the site, and
            # accepting anything is what a missing floor means. Say so loudly.
            log.error("the saved desired-state floor is unreadable; starting from none")
        return floor

    def reset(self) -> None:
        """A new enrollment: whatever this hub signs next is the site's state."""
        self.revision, self.versions = 0, {}
        self._save()

    def verify(self, signed: object, keys: str | KeySet) -> DesiredState:
        """The desired state in ``signed`` (``{"text", "signature"}``) if this site may take
        it now; a :class:`VerificationError` naming the reason otherwise. Changes nothing."""
        if not isinstance(signed, dict):
            raise VerificationError("the desired state carries no signed document; refusing it")
        text, signature = signed.get("text"), signed.get("signature")
        if not isinstance(text, str) or not isinstance(signature, str):
            raise VerificationError("the signed desired state needs text and signature")
        trusted = keys if isinstance(keys, KeySet) else KeySet.of(load_public_key(keys))
        return verify_desired_state(
            text,
            signature,
            trusted,
            site=self.site,
            applied_revision=self.revision,
            now=datetime.now(UTC),
        )

    def accept(self, signed: object, keys: str | KeySet) -> DesiredState | None:
        """:meth:`verify`, with the floor raised to the state's revision; None, with
        :attr:`refusal` set, if it is refused."""
        try:
            desired = self.verify(signed, keys)
        except ModelfleetError as exc:
            if exc.message != self.refusal:
                log.warning("desired state refused: %s", exc.message)
            self.refusal = exc.message
            return None
        self.refusal = None
        if desired.revision > self.revision or self.unsaved:
            self.revision = max(self.revision, desired.revision)
            self._save()
        return desired

    def refusal_is_new(self) -> bool:
        """True once each time :attr:`refusal` changed since the last call: worth a report."""
        if self.refusal == self._reported:
            return False
        self._reported = self.refusal
        return True

    def ran(self, model: str, version: int) -> None:
        """``model:version`` is active: below it only by a signed rollback from now on."""
        if self.versions.get(model) != version:
            self.versions[model] = version
            self._save()

    def forget(self, model: str) -> None:
        """The signed state no longer lists ``model`` (the hub unassigned it)."""
        if self.versions.pop(model, None) is not None:
            self._save()

    def _save(self) -> None:
        """Write the floor; on a full disk keep it in memory (it still guards this run) and
        write it on the next :meth:`accept` (the state counted the failed write)."""
        floor = json.dumps({"revision": self.revision, "versions": self.versions})
        try:
            self.state.set(_KEY, floor)
        except InsufficientStorage:
            self.unsaved = True
            return
        self.unsaved = False
