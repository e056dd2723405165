"""Fixtures shared by every test package: tiny ONNX models and hubs that clean up."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper
from sqlalchemy import make_url

from modelfleet.hub.app import build_context, create_app
from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub.context import HubContext
from modelfleet.settings import HubSettings

# pytest-xdist's workers start with COLUMNS=80 and LINES=24 in their environment; rich reads
# them once, when the CLI's consoles are made, and every table would then be cut at 80
# columns whatever COLUMNS a test passes to the command. A test that cares sets its own.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)


def write_tiny_onnx(path: Path, offset: float = 1.0, features: int = 4) -> Path:
    """Y = X + offset on a [batch, features] FP32 input; ``offset`` varies the digest."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", features])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", features])
    const = helper.make_tensor("offset", TensorProto.FLOAT, [1], [offset])
    node = helper.make_node("Add", ["X", "offset"], ["Y"])
    graph = helper.make_graph([node], "tiny", [x], [y], initializer=[const])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="modelfleet-tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def trust_fleet_ca(mp: pytest.MonkeyPatch, ca_file: Path) -> None:
    """Make every client of this test trust the fleet CA of the hub under test, as a user's
    ``export MODELFLEET_CA_FILE`` does: HubClient and modelfleet.Client (MODELFLEET_CA_FILE),
    plain httpx calls (SSL_CERT_FILE, which httpx reads), and the CLI and site processes the
    test starts (they inherit the environment). Undone with ``mp``."""
    mp.setenv("MODELFLEET_CA_FILE", str(ca_file))
    mp.setenv("SSL_CERT_FILE", str(ca_file))


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1_000_000))

    def make(offset: float | None = None, features: int = 4) -> Path:
        n = next(counter)
        return write_tiny_onnx(
            tmp_path / f"tiny-{n}.onnx", offset if offset is not None else float(n + 1), features
        )

    return make


@dataclass
class InProcessHub:
    client: TestClient
    ctx: HubContext
    admin_token: str
    data_dir: Path

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin_token}"}

    def token(self, role: str) -> str:
        response = self.client.post(
            "/api/v1/tokens", json={"name": f"t-{role}", "role": role}, headers=self.headers()
        )
        response.raise_for_status()
        secret: str = response.json()["token"]
        return secret


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[Callable[..., InProcessHub]]:
    """Factory of in-process hubs (FastAPI TestClient) in fresh data directories."""
    made: list[InProcessHub] = []

    def make(
        *, db: str | None = None, artifacts: str | None = None, **settings: object
    ) -> InProcessHub:
        root = tmp_path / f"hub-{len(made)}"
        init = init_hub(root, db=db, artifacts=artifacts)
        hub_settings = HubSettings(data_dir=root).model_copy(update=settings)
        ctx = build_context(hub_settings)
        client = TestClient(create_app(ctx), raise_server_exceptions=False)
        client.__enter__()
        hub = InProcessHub(client, ctx, init.admin_token, root)
        made.append(hub)
        return hub

    yield make
    for hub in made:
        hub.client.__exit__(None, None, None)


POSTGRES_ENV = "MODELFLEET_TEST_POSTGRES_URL"

#: Fixtures that reach PostgreSQL: a test using one is marked ``postgres`` (below), so
#: ``pytest -m postgres`` selects every PostgreSQL test and ``-m "not postgres"`` none.
POSTGRES_FIXTURES = frozenset({"postgres_url", "pgfleet"})


#: The longest files (worker-seconds in CI), handed out first: ``--dist loadfile`` gives
#: each worker whole files in collection order, so a long file collected last (the demo's,
#: at the root) would run alone at the end while the other worker idles.
LONGEST_FIRST = (
    "tests/docs/test_tour_and_guides.py",
    "tests/site/test_agent_e2e.py",
    "tests/hub/test_fuzz_api.py",
    "tests/test_demo.py",
    "tests/hub/test_events_sites.py",
    "tests/deploy/test_rollout_cli.py",
    "tests/cli/test_fl.py",
    "tests/monitoring/test_hostile_telemetry.py",
    "tests/cli/test_roundtrip.py",
    "tests/site/test_anti_rollback.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Hand the longest files out first (:data:`LONGEST_FIRST`; the order within a file
    is kept). Mark every test that requests a PostgreSQL fixture (directly or through
    another fixture) or is a ``postgres`` parametrization; ``postgres_url`` refuses
    unmarked tests that reach it some other way (``request.getfixturevalue``)."""
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = set(map(str, callspec.params.values())) if callspec is not None else set()
        if names & POSTGRES_FIXTURES or "postgres" in params:
            item.add_marker(pytest.mark.postgres)


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A PostgreSQL URL confined to a fresh schema, dropped afterwards (skips without PG)."""
    if request.node.get_closest_marker("postgres") is None:
        raise AssertionError(
            f"{request.node.nodeid} reaches PostgreSQL but is not marked @pytest.mark.postgres"
        )
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set; PostgreSQL backend not tested")
    import psycopg

    libpq_url = make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(libpq_url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq_url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
