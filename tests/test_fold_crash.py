"""A folder killed mid-batch (kill -9) leaves the statistics exact: the log is folded again
from the last committed position, on every backend, and matches the pandas recomputation."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from experiments import load_spec
from experiments.foldbatch import Exposure
from experiments.folding import FoldPlan
from experiments.reporting import phase_report
from experiments.store import open_store
from tests.oracle import assert_same_arms, expected_arms
from tests.servers import wait_until
from tests.test_event_log import typed
from tests.test_events import METRICS, RATIOS, SPEC, UNITS, make_events

FOLDER = """
import sys
from experiments.store import open_store
store = open_store(sys.argv[1])
print("folding", flush=True)
while store.fold("ranker-v2", limit=200):
    pass
"""


def test_a_folder_killed_mid_batch_leaves_exact_statistics(store_url: str) -> None:
    store = open_store(store_url)
    spec = load_spec(SPEC)
    store.put_experiment(spec)
    plan = FoldPlan.from_spec(spec)
    exposed = {u: ("control", "treatment")[i % 2] for i, u in enumerate(UNITS)}
    store.append_exposures(
        "ranker-v2", "main", plan, [Exposure(u, v, 1.0) for u, v in exposed.items()]
    )
    events = make_events(20_000, seed=21)
    for start in range(0, len(events), 500):
        batch = events[start : start + 500]
        store.append_events("ranker-v2", "main", plan, typed(batch))
    total = store.fold_state("ranker-v2").pending
    folder = subprocess.Popen(
        [sys.executable, "-c", FOLDER, store_url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert folder.stdout is not None
        assert folder.stdout.readline() == "folding\n"
        # Some batches committed, more to come: the kill lands while it folds.
        wait_until(lambda: store.fold_state("ranker-v2").pending < total * 0.8, "progress")
        folder.send_signal(signal.SIGKILL)
    finally:
        folder.wait(timeout=30)
        folder.stdout.close()
    assert folder.returncode == -signal.SIGKILL
    assert store.fold_state("ranker-v2").pending > 0  # it was killed before it finished
    started = time.monotonic()
    state = store.settle("ranker-v2", timeout=60)  # waits out the dead folder's lease
    assert state.pending == 0, (state, time.monotonic() - started)
    report = phase_report(store, store.get_experiment("ranker-v2"))
    assert_same_arms(report["arms"], expected_arms(events, exposed, METRICS, RATIOS))
    store.close()
