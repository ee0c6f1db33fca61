"""Warm-up at start: the first verdict, report and Flagger call answer as fast as later ones.

The analysis stack (scipy, statsmodels, pandas, plotly) takes seconds to import, far more on a
busy node, and parts of it load on first use; done inside the first request that needed it,
that request took 8–14 s, beyond Flagger's usual 5 s webhook timeout, and starved concurrent
assignments of the GIL.  So the service imports it in a background thread at start and runs
each heavy path once on a throwaway experiment in a temporary SQLite store (the same code the
first real request runs, nothing of the real store touched).  Assignment is served meanwhile;
`/readyz` waits for the warm-up, so a Kubernetes Service sends traffic only afterwards.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

log = logging.getLogger("abmesh.warmup")


def warm_up() -> float:
    """Import and exercise decide, report, HTML report and verdict; returns the seconds taken."""
    start = time.perf_counter()
    from controlplane.lifecycle import Action, change_state
    from experiments import EXAMPLES_DIR, load_spec
    from experiments.folding import Event, FoldPlan
    from experiments.report import build_report
    from experiments.report_html import render_html
    from experiments.store.sqlite import SQLiteStore
    from experiments.verdict import current_verdict

    spec = load_spec(EXAMPLES_DIR / "ranker-v2.yaml")
    with tempfile.TemporaryDirectory(prefix="abmesh-warmup-") as tmp:
        store = SQLiteStore(Path(tmp) / "warmup.db")
        try:
            store.put_experiment(spec)
            record = change_state(store, spec.name, Action.START)
            plan = FoldPlan.from_spec(spec)
            arms = {f"u{i}": spec.variants[i % 2].key for i in range(20)}
            exposed = {u: (v, 0.0) for u, v in arms.items()}
            store.record_exposures(spec.name, record.phase, plan, exposed)
            clicks = [Event(f"e{i}", u, "click", 1.0, 0.0) for i, u in enumerate(arms) if i % 3]
            store.ingest_events(spec.name, record.phase, plan, clicks)
            render_html(build_report(store, spec.name))
            current_verdict(store, spec.name, None)
        finally:
            store.close()
    return time.perf_counter() - start
