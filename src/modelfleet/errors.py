"""The modelfleet error hierarchy.

Every error the package raises on purpose derives from :class:`ModelfleetError`, carries a
stable machine-readable ``code`` and the HTTP ``status`` the hub answers with. Third-party
exceptions (SQLAlchemy, onnx, onnxruntime, httpx, fsspec) are translated at the boundary
with ``raise ... from exc`` so callers only ever catch ours.

::

    ModelfleetError                      500 internal
    ├── InvalidInput                     400 invalid_input
    │   ├── InvalidName                  400 invalid_name
    │   ├── InvalidArtifact              400 invalid_artifact
    │   ├── ArtifactTooLarge             413 artifact_too_large
    │   └── PolicyViolation              422 policy_violation
    ├── AuthError
    │   ├── Unauthenticated              401 unauthenticated
    │   └── PermissionDenied             403 forbidden
    ├── NotFound                         404 not_found
    ├── Conflict                         409 conflict
    ├── VerificationError                422 verification_failed
    │   ├── DigestMismatch               422 digest_mismatch
    │   └── SignatureInvalid             422 signature_invalid
    ├── StoreError                       503 store_unavailable
    └── HubError                         (client side)
        ├── HubUnreachable               503 hub_unreachable
        ├── TlsError                     502 tls_failed
        └── HubResponseError             status and code echoed from the hub
"""

from __future__ import annotations


class ModelfleetError(Exception):
    """Base of every error modelfleet raises on purpose."""

    code: str = "internal"
    status: int = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, dict[str, str]]:
        """The hub's error body: ``{"error": {"code": ..., "message": ...}}``."""
        return {"error": {"code": self.code, "message": self.message}}


class InvalidInput(ModelfleetError):
    """The caller sent something malformed; repeating it unchanged will fail again."""

    code = "invalid_input"
    status = 400


class InvalidName(InvalidInput):
    """A model, alias, site or label name breaks the naming rules."""

    code = "invalid_name"


class InvalidArtifact(InvalidInput):
    """An uploaded file is not a valid ONNX model (pickle, text, truncated, corrupted)."""

    code = "invalid_artifact"


class ArtifactTooLarge(InvalidInput):
    """An upload exceeds the hub's configured size limit."""

    code = "artifact_too_large"
    status = 413


class PolicyViolation(InvalidInput):
    """A request breaks a governance rule (residency, spread)."""

    code = "policy_violation"
    status = 422


class AuthError(ModelfleetError):
    """Authentication or authorization failed."""


class Unauthenticated(AuthError):
    """No token, an unknown token, or a revoked or expired one."""

    code = "unauthenticated"
    status = 401


class PermissionDenied(AuthError):
    """The token is valid but its role or site binding does not allow the action."""

    code = "forbidden"
    status = 403


class NotFound(ModelfleetError):
    """The named object (model, version, alias, token, site, blob) does not exist."""

    code = "not_found"
    status = 404


class Conflict(ModelfleetError):
    """The request conflicts with the current state (e.g. an object already exists)."""

    code = "conflict"
    status = 409


class VerificationError(ModelfleetError):
    """An artifact or manifest failed verification; it must not be loaded."""

    code = "verification_failed"
    status = 422


class DigestMismatch(VerificationError):
    """The bytes do not hash to the digest the manifest promises."""

    code = "digest_mismatch"


class SignatureInvalid(VerificationError):
    """The manifest's signature does not verify against the pinned hub key."""

    code = "signature_invalid"


class StoreError(ModelfleetError):
    """The state or artifact backend failed; the request may succeed if retried."""

    code = "store_unavailable"
    status = 503


class HubError(ModelfleetError):
    """Client side: talking to the hub failed."""


class HubUnreachable(HubError):
    """The hub could not be reached (connection refused, DNS, timeout)."""

    code = "hub_unreachable"
    status = 503


class TlsError(HubError):
    """TLS with a peer failed in a way a retry will not fix: its certificate does not verify
    against the fleet CA, or one side speaks plain HTTP to the other's TLS port."""

    code = "tls_failed"
    status = 502


class HubResponseError(HubError):
    """The hub answered with an error; ``status`` and ``code`` are the hub's."""

    def __init__(self, message: str, *, code: str, status: int) -> None:
        super().__init__(message, code=code)
        self.status = status


def error_class_for(code: str) -> type[ModelfleetError] | None:
    """The error class for a wire ``code``, searching subclasses defined anywhere (so errors
    declared in other modules, such as ``TensorError``, are found once imported)."""
    pending: list[type[ModelfleetError]] = [ModelfleetError]
    while pending:
        cls = pending.pop(0)
        if cls.code == code and "code" in cls.__dict__:
            return cls
        pending.extend(cls.__subclasses__())
    return None
