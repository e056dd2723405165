"""A hub process on PostgreSQL: the scale-out backend behind the same CLI."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from modelfleet.hub.bootstrap import init_hub
from modelfleet.hub_client import HubClient
from modelfleet.sim.launcher import HubProcess
from tests.conftest import trust_fleet_ca

pytestmark = pytest.mark.postgres


def test_two_hub_replicas_share_one_postgres(
    postgres_url: str, tiny_onnx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init = init_hub(tmp_path / "hub", db=postgres_url)
    trust_fleet_ca(monkeypatch, init.ca_file)
    # A second replica: same key and database, its own process and port.
    first = HubProcess(tmp_path / "hub").start()
    second = HubProcess(tmp_path / "hub").start()
    try:
        files = [tiny_onnx() for _ in range(20)]
        with (
            HubClient(first.url, init.admin_token) as a,
            HubClient(second.url, init.admin_token) as b,
        ):
            clients = [a, b] * 10
            with ThreadPoolExecutor(20) as pool:
                results = list(
                    pool.map(
                        lambda pair: pair[0].push(pair[1], "pump"), zip(clients, files, strict=True)
                    )
                )
            assert sorted(r["version"] for r in results) == list(range(1, 21))
            assert a.get_model("pump")["version_count"] == 20
            assert b.resolve("pump")["version"] == 20
            b.pull("pump:7", tmp_path / "seven.onnx")
            seven = next(r for r in results if r["version"] == 7)
            assert (tmp_path / "seven.onnx").stat().st_size == seven["size"]
    finally:
        first.stop()
        second.stop()
