"""`abmesh demo --fast` end to end, as a newcomer runs it (tests/demo_support.py): with
`--scenario shadow` a candidate stopped by the shadow comparison before serving anyone, checked
from the audit log and the report JSON, and no process of the demo left running.  The
promotion and the regression's rollback run once each in tests/test_report_browser.py, which
checks the same and opens their report pages in Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.localstack import prometheus_binary
from tests.demo_support import run_to_a_decision

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(prometheus_binary() is None, reason="prometheus not installed"),
]


def test_the_shadow_demo_stops_the_candidate_before_it_serves_anyone(tmp_path: Path) -> None:
    report = run_to_a_decision("shadow", tmp_path)
    assert report["headline"].startswith("rolled back: ")
    assert report["weights"] == {"stable": 100.0, "candidate": 0.0}
