"""`abmesh demo --fast` end to end, as a newcomer runs it: a promotion, with `--scenario
regression` a rollback, and with `--scenario shadow` a candidate stopped by the shadow
comparison before serving anyone, each checked from the audit log and the report JSON; and no
process of the demo is left running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.localstack import prometheus_binary
from experiments.report import build_report
from experiments.store import open_store

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(prometheus_binary() is None, reason="prometheus not installed"),
]


def running_in(directory: Path) -> list[str]:
    """Processes whose command line names `directory` (Envoy's and Prometheus' configs do)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if str(directory) in line]


@pytest.mark.parametrize(("scenario", "status", "action"), [
    ("promote", "promoted", "promote"), ("regression", "rolled_back", "rollback"),
    ("shadow", "rolled_back", "rollback"),
])  # fmt: skip
def test_the_demo_runs_to_a_decision(
    tmp_path: Path, scenario: str, status: str, action: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "demo", "--fast", "--scenario", scenario,
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=280, check=False, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("ABMESH_")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{status} after" in proc.stdout
    assert "every process the demo started has been stopped" in proc.stdout
    store = open_store(f"sqlite:///{tmp_path / 'abmesh.db'}")
    record = store.get_experiment("model-demo")
    assert (record.state, record.status.outcome) == ("concluded", status)
    by_hand, *audit = store.audit(record.uid)
    assert (by_hand["by"], by_hand["state"]) == ("demo", "running")  # the demo started it
    assert audit[0]["action"] == "start"
    assert audit[-1]["action"] == action
    report = build_report(store, "model-demo")
    assert report["rollout"]["status"] == status
    if status == "promoted":
        assert report["rollout"]["winner"] == "candidate"
        assert any(e["action"] == "phase" for e in audit)  # the canary led to the A/B test
    elif scenario == "shadow":
        assert "disagreement" in audit[-1]["what"]
        assert all(e["weights"].get("candidate", 0) == 0 for e in audit)  # it served nobody
        assert report["shadow"]["verdict"]["status"] == "fail"
    else:
        assert any(g["status"] == "fail" for g in audit[-1]["guardrails"])
    store.close()
    assert (tmp_path / "report.html").stat().st_size > 100_000
    assert running_in(tmp_path) == []
