"""`abmesh demo --fast` run as a newcomer runs it, and what every run must show: the scenario's
decision in the audit log and the report JSON, the report page written, and no process of the
demo left running.  Each scenario runs once in the suite: the shadow one in test_demo, the
promotion and the rollback in test_report_browser, which also opens their pages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from experiments.report import build_report
from experiments.store import open_store

# scenario -> (the rollout's status, its last action)
DECISIONS = {
    "promote": ("promoted", "promote"),
    "regression": ("rolled_back", "rollback"),
    "shadow": ("rolled_back", "rollback"),
}


def running_in(directory: Path) -> list[str]:
    """Processes whose command line names `directory` (Envoy's and Prometheus' configs do)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if str(directory) in line]


def run_to_a_decision(scenario: str, workdir: Path) -> dict[str, Any]:
    """Run the demo in `workdir`, check its decision, and return the report JSON."""
    status, action = DECISIONS[scenario]
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "demo", "--fast", "--scenario", scenario,
         "--workdir", str(workdir)],
        capture_output=True, text=True, timeout=280, check=False, cwd=workdir,
        env={k: v for k, v in os.environ.items() if not k.startswith("ABMESH_")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{status} after" in proc.stdout
    assert "every process the demo started has been stopped" in proc.stdout
    store = open_store(f"sqlite:///{workdir / 'abmesh.db'}")
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
    assert (workdir / "report.html").stat().st_size > 100_000
    assert running_in(workdir) == []
    return report
