"""Names and references: whole-string rules (a trailing newline is not a name)."""

from __future__ import annotations

import pytest

from modelfleet.errors import InvalidInput, InvalidName
from modelfleet.federation.jobs import JobConfig
from modelfleet.refs import check_name, parse_ref


@pytest.mark.parametrize("bad", ["plant-eu\n", "plant-eu\r", "\nplant", "", "-x", "a" * 65])
def test_names_match_the_whole_string(bad: str) -> None:
    with pytest.raises(InvalidName):
        check_name(bad, "site name")


def test_references_refuse_a_trailing_newline() -> None:
    assert parse_ref("machine-health@production").alias == "production"
    for bad in ("machine-health\n", "machine-health@production\n", "machine-health:2\n"):
        with pytest.raises(InvalidName):
            parse_ref(bad)


def test_job_ids_match_the_whole_string() -> None:
    with pytest.raises(InvalidInput, match="invalid federated job: id"):
        JobConfig.parse({"id": "digits\n", "model": "m", "data": "d", "rounds": 1})
