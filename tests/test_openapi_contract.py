"""The OpenAPI document is a contract the service keeps: schemathesis (the README's command, with
fewer examples and a fixed seed so a run is repeatable) finds no server error and no response,
status or content type the document does not declare.  schemathesis.toml says which two checks
are relaxed on which operations, and why."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from assignment.auth import Role
from experiments import EXAMPLES_DIR
from tests.servers import Service, auth, start_service

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("contract")
    service = start_service(f"sqlite:///{workdir / 'abmesh.db'}", workdir)
    spec = yaml.safe_load((EXAMPLES_DIR / "ranker-v2.yaml").read_text())
    with httpx.Client(base_url=service.url, headers=auth(Role.ADMIN), timeout=30) as http:
        assert http.post("/v1/experiments", json=spec).status_code == 201
        assert http.post("/v1/experiments/ranker-v2/start").status_code == 200
    yield service
    service.stop()


def test_schemathesis_finds_no_server_error_and_no_contract_failure(
    svc: Service, tmp_path: Path
) -> None:
    binary = shutil.which("schemathesis")
    assert binary is not None, "schemathesis is a dev dependency: pip install -e '.[dev]'"
    run = subprocess.run(
        [binary, "run", f"{svc.url}/openapi.json",
         "--header", "Authorization: " + auth(Role.ADMIN)["Authorization"],
         "--max-examples", "10", "--seed", "1", "--no-color"],
        cwd=ROOT,  # schemathesis.toml
        env={"PATH": str(Path(binary).parent), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    summary = run.stdout[run.stdout.find("SUMMARY") :]
    assert "Failures:" not in summary, summary
    assert re.search(r"\d+ generated, \d+ passed", summary), summary
