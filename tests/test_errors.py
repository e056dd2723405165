"""The error table: every class that declares a code is reachable from it, codes are unique,
and the package exports the errors users catch."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import modelfleet
from modelfleet import errors


def _all_error_classes() -> list[type[errors.ModelfleetError]]:
    """Every error class the package defines, wherever it lives (all modules imported first,
    so one defined outside errors.py would be found)."""
    for module in pkgutil.walk_packages(modelfleet.__path__, "modelfleet."):
        if module.name.endswith("__main__") or ".migrations" in module.name:  # scripts, not modules
            continue
        try:
            importlib.import_module(module.name)
        except ImportError:  # an optional extra (torch, sklearn) that is not installed
            continue
    found: list[type[errors.ModelfleetError]] = []
    pending: list[type[errors.ModelfleetError]] = [errors.ModelfleetError]
    while pending:
        cls = pending.pop()
        if cls.__module__.startswith("modelfleet."):
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_class_with_a_code_is_in_the_table() -> None:
    coded = [cls for cls in _all_error_classes() if "code" in cls.__dict__]
    assert coded, "no coded class found"
    for cls in coded:
        assert errors.ERROR_CLASSES[cls.code] is cls, cls.__name__
        assert errors.error_class_for(cls.code) is cls


def test_codes_are_unique_and_match_their_class() -> None:
    coded = [cls for cls in _all_error_classes() if "code" in cls.__dict__]
    codes = [cls.code for cls in coded]
    assert len(codes) == len(set(codes))
    assert len(errors.ERROR_CLASSES) == len(coded)
    for code, cls in errors.ERROR_CLASSES.items():
        assert cls.code == code


def test_error_classes_live_in_errors_py() -> None:
    for cls in _all_error_classes():
        assert cls.__module__ == "modelfleet.errors", cls


def test_unknown_code_has_no_class() -> None:
    assert errors.error_class_for("no_such_code") is None
    assert errors.error_class_for("session_error") is None  # per-instance: HubResponseError


def test_the_package_exports_the_errors_users_catch() -> None:
    for name in (
        "ModelfleetError",
        "HubError",
        "HubUnreachable",
        "HubResponseError",
        "NotFound",
        "Conflict",
        "InvalidInput",
        "PermissionDenied",
        "Unauthenticated",
        "NoSiteAvailable",
        "SiteError",
        "DeadlineExceeded",
        "TlsError",
    ):
        assert getattr(modelfleet, name) is getattr(errors, name)
        assert name in modelfleet.__all__


def test_importing_the_package_stays_light() -> None:
    code = (
        "import sys, modelfleet; modelfleet.NotFound; "
        "heavy = [m for m in ('httpx', 'numpy', 'pydantic', 'modelfleet.hub_client') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
