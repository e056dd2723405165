"""One grammar of OIP model paths for the site and the gateway."""

from __future__ import annotations

import pytest

from modelfleet.oip.paths import ModelPath, parse_model_path


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/models/pump", ModelPath("pump", None, "")),
        ("/v2/models/pump/ready", ModelPath("pump", None, "ready")),
        ("/v2/models/pump/infer", ModelPath("pump", None, "infer")),
        ("/v2/models/pump/versions/3", ModelPath("pump", 3, "")),
        ("/v2/models/pump/versions/3/ready", ModelPath("pump", 3, "ready")),
        ("/v2/models/pump/versions/0003/infer", ModelPath("pump", 3, "infer")),
        # Not an integer (or too long for one): version -1, which no model has -> 404.
        ("/v2/models/pump/versions/x/infer", ModelPath("pump", -1, "infer")),
        ("/v2/models/pump/versions/\u00b2/infer", ModelPath("pump", -1, "infer")),
        ("/v2/models/pump/versions/" + "9" * 19, ModelPath("pump", -1, "")),
        # A model may be called "ready", "infer" or "versions".
        ("/v2/models/ready", ModelPath("ready", None, "")),
        ("/v2/models/infer", ModelPath("infer", None, "")),
        ("/v2/models/versions/ready", ModelPath("versions", None, "ready")),
        ("/v2/models/pump/versions/infer", ModelPath("pump", -1, "")),
    ],
)
def test_model_paths(path: str, expected: ModelPath) -> None:
    assert parse_model_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/",
        "/v2/models//infer",
        "/v2/models/pump/",
        "/v2/models/pump/versions",
        "/v2/models/pump/versions/ready",
        "/v2/models/pump/versions/3/extra",
        "/v2/models/pump/infer/ready",
        "/v2/models/pump/stats",
        "/v2/repository/index",
        "/v2",
    ],
)
def test_not_model_paths(path: str) -> None:
    assert parse_model_path(path) is None
