"""The modelfleet error hierarchy.

Every error the package raises on purpose derives from :class:`ModelfleetError`, carries a
stable machine-readable ``code`` and the HTTP ``status`` the hub answers with. Third-party
exceptions (SQLAlchemy, onnx, onnxruntime, httpx, fsspec) are translated at the boundary
with ``raise ... from exc`` so callers only ever catch ours.

::

    ModelfleetError                      500 internal
    ├── InvalidInput                     400 invalid_input
    │   ├── InvalidName                  400 invalid_name
    │   ├── InvalidDataRegion            400 invalid_data_region
    │   ├── InvalidArtifact              400 invalid_artifact
    │   ├── ArtifactTooLarge             413 artifact_too_large
    │   ├── CrashPointError              400 invalid_input  (test-only environment)
    │   ├── PolicyViolation              422 policy_violation
    │   ├── TensorError                  400 invalid_tensor
    │   └── MissingDependency            400 missing_dependency  (also an ImportError)
    ├── AuthError
    │   ├── Unauthenticated              401 unauthenticated
    │   ├── RateLimited                  429 rate_limited
    │   └── PermissionDenied             403 forbidden
    ├── NotFound                         404 not_found
    ├── Conflict                         409 conflict
    ├── VerificationError                422 verification_failed
    │   ├── DigestMismatch               422 digest_mismatch
    │   ├── SignatureInvalid             422 signature_invalid
    │   └── DowngradeRefused             422 downgrade_refused
    ├── StoreError                       503 store_unavailable
    ├── InsufficientStorage              507 insufficient_storage
    ├── RangeNotSatisfiable              416 range_not_satisfiable
    ├── ModelFailure                     500|400 session_error, warmup_error, inference_error
    ├── TransportFailure                 502 transport_failure
    │   └── PeerMismatch                 502 peer_mismatch
    ├── NoSiteAvailable                  503 no_site_available
    ├── DeadlineExceeded                 504 deadline_exceeded
    ├── Overloaded                       503 overloaded
    ├── SiteError                        400 site_error
    └── HubError                         (client side)
        ├── HubUnreachable               503 hub_unreachable
        ├── TlsError                     502 tls_failed
        └── HubResponseError             status and code echoed from the hub

A client maps a hub's error body back to its class with :func:`error_class_for`, through the
explicit table :data:`ERROR_CLASSES` (one class per code), so the answer never depends on
which modules happen to be imported. Classes without a ``code`` of their own (``AuthError``,
``HubError``, ``ModelFailure``, ``HubResponseError``) are not in the table: their code is
per instance, so a body carrying it becomes a :class:`HubResponseError`.

Exceptions private to one module that never leave it (``transport.client._Stale``, a retry
signal; ``transport.asgi.LifespanFailed``, caught by the server that raised it;
``site.evaluation.Refused``, told to the hub as a refusal) stay there.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

#: The stages at which a model can fail on a site (:class:`ModelFailure`'s ``code``).
ModelFailureCode = Literal["session_error", "warmup_error", "inference_error"]


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


class InvalidDataRegion(InvalidInput):
    """A request's data region breaks the region grammar (``routing.residency``): it is
    refused before routing, so a made-up region costs the router nothing to remember."""

    code = "invalid_data_region"


class InvalidArtifact(InvalidInput):
    """An uploaded file is not a valid ONNX model (pickle, text, truncated, corrupted)."""

    code = "invalid_artifact"


class ArtifactTooLarge(InvalidInput):
    """An upload exceeds the hub's configured size limit."""

    code = "artifact_too_large"
    status = 413


class CrashPointError(InvalidInput):
    """``MODELFLEET_CRASH_AT`` names no crash point, or ``MODELFLEET_CRASH_AFTER`` is no
    count (:mod:`modelfleet.crashpoints`; refused at start so a typo cannot disable a test's
    crash)."""


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


class RateLimited(AuthError):
    """Too many failed authentications from one address: refused before any lookup until
    ``retry_after_s`` (the hub's ``Retry-After``)."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after_s: int = 60) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


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


class DowngradeRefused(VerificationError):
    """A desired state asks a site for a version below one it ran, without the hub's
    signed mark that it is a rollback (:mod:`modelfleet.registry.desired_state`)."""

    code = "downgrade_refused"


class StoreError(ModelfleetError):
    """The state or artifact backend failed; the request may succeed if retried."""

    code = "store_unavailable"
    status = 503


class InsufficientStorage(ModelfleetError):
    """A disk the hub or a site writes to is full (ENOSPC): nothing was kept, nothing is
    half-written; retry once space is freed. Answered 507, as WebDAV defines it."""

    code = "insufficient_storage"
    status = 507


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


class TensorError(InvalidInput):
    """A tensor or inference message is malformed; the message names the offending tensor.

    Codecs raise only this, never a numpy/orjson/struct error, so the server can map every
    decoding failure to one 400 answer without a catch-all.
    """

    code = "invalid_tensor"


class MissingDependency(InvalidInput, ImportError):
    """An optional extra needed for this export is not installed.

    It is also an :class:`ImportError` so code that already guards optional imports with
    ``except ImportError`` keeps working; the message names the extra to install.
    """

    code = "missing_dependency"


class RangeNotSatisfiable(ModelfleetError):
    """The requested download range lies outside the blob."""

    code = "range_not_satisfiable"
    status = 416


class ModelFailure(ModelfleetError):
    """The model itself failed; ``code`` says at which stage so callers can pick a reaction.

    ``session_error`` and ``warmup_error`` mean the version must not be activated (the
    previous one keeps serving); ``inference_error`` concerns one request only. ``status``
    is 400 when onnxruntime blamed the input (wrong rank or dimension) and 500 otherwise.
    """

    status = 500

    def __init__(self, message: str, *, code: ModelFailureCode, status: int = 500) -> None:
        super().__init__(message, code=code)
        self.status = status


class TransportFailure(ModelfleetError):
    """The connection failed before a complete HTTP response arrived."""

    code = "transport_failure"
    status = 502


class PeerMismatch(TransportFailure):
    """The server's certificate does not name the site (or gateway) the caller chose."""

    code = "peer_mismatch"


class NoSiteAvailable(ModelfleetError):
    """No permitted site can take the request; the message names the residency rule."""

    code = "no_site_available"
    status = 503


class DeadlineExceeded(ModelfleetError):
    """No site answered within the request's deadline."""

    code = "deadline_exceeded"
    status = 504


class Overloaded(ModelfleetError):
    """A site's queue for a model is full, or a request waited in it too long: retry
    later or elsewhere (the router does). Answered 503, never queued without bound."""

    code = "overloaded"
    status = 503


class SiteError(ModelfleetError):
    """A site refused the request (4xx other than a missing model); not retried elsewhere."""

    code = "site_error"
    status = 400


#: Wire code -> class, for every class that declares a ``code`` of its own. Written out
#: rather than found by walking ``__subclasses__()`` so the mapping is the same whatever has
#: been imported (a test checks it is complete and the codes unique).
ERROR_CLASSES: Mapping[str, type[ModelfleetError]] = MappingProxyType(
    {
        "internal": ModelfleetError,
        "invalid_input": InvalidInput,
        "invalid_name": InvalidName,
        "invalid_data_region": InvalidDataRegion,
        "invalid_artifact": InvalidArtifact,
        "artifact_too_large": ArtifactTooLarge,
        "policy_violation": PolicyViolation,
        "invalid_tensor": TensorError,
        "missing_dependency": MissingDependency,
        "unauthenticated": Unauthenticated,
        "rate_limited": RateLimited,
        "forbidden": PermissionDenied,
        "not_found": NotFound,
        "insufficient_storage": InsufficientStorage,
        "conflict": Conflict,
        "verification_failed": VerificationError,
        "digest_mismatch": DigestMismatch,
        "signature_invalid": SignatureInvalid,
        "downgrade_refused": DowngradeRefused,
        "store_unavailable": StoreError,
        "range_not_satisfiable": RangeNotSatisfiable,
        "transport_failure": TransportFailure,
        "peer_mismatch": PeerMismatch,
        "no_site_available": NoSiteAvailable,
        "deadline_exceeded": DeadlineExceeded,
        "overloaded": Overloaded,
        "site_error": SiteError,
        "hub_unreachable": HubUnreachable,
        "tls_failed": TlsError,
    }
)


def error_class_for(code: str) -> type[ModelfleetError] | None:
    """The error class for a wire ``code`` (None for a code no class declares)."""
    return ERROR_CLASSES.get(code)
