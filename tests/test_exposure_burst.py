"""The small twin of benchmarks/exposure_burst.py: new units in bursts through POST /v1/assign
and ext_authz with 10 running experiments, then 10 more covering everyone; every exposure the
service answered is in the statistics, and none was dropped, on SQLite and Redis."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks.exposure_burst import run


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_every_exposure_of_a_burst_is_counted(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{backend}_store_url")
    args = argparse.Namespace(units=20_000, extauthz=1_000, overlap=2_000, clients=4)
    result = run(url, tmp_path, args)
    assert result["sent"] == 20_000 + 2_000 * 10  # one slice each, then all 10 for 2,000
    assert result["counted"] == result["sent"]
    assert result["dropped"] == 0
