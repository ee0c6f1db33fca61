"""What the index of every experiment's report costs, against building the reports themselves.

    python benchmarks/report_index.py [--experiments 100] [--store sqlite:///FILE | redis://…]

N experiments (two arms, 1,000 exposed units and their clicks each) are written to the store
(default: a new SQLite file in a temp directory; a Redis URL should carry a `?prefix=` of its
own, whose keys are left behind).  Timed, while they run: the index's rows (`index_rows`) and
the N reports built (`build_report`).  Then each gets 150 recorded looks and is concluded as
promoted, and the same again, with reading every concluded phase's looks whole beside them:
what the index would cost if it read them to take the last.  Rendering ten report pages is
timed too.  Times are printed, never asserted.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis import ExperimentStats, decide  # noqa: E402
from assignment import assign_many  # noqa: E402
from controlplane.lifecycle import Action, change_state  # noqa: E402
from experiments import load_spec  # noqa: E402
from experiments.folding import Event, FoldPlan  # noqa: E402
from experiments.looks_log import look_of  # noqa: E402
from experiments.report import build_report  # noqa: E402
from experiments.report_html import render_html  # noqa: E402
from experiments.report_index import index_rows  # noqa: E402
from experiments.reporting import analysed_spec, phase_report  # noqa: E402
from experiments.status import Outcome, State, end_phase  # noqa: E402
from experiments.store import Store, open_store  # noqa: E402
from tests.rollout_support import spec_doc  # noqa: E402

LOOKS = 150


def seed(store: Store, experiments: int) -> None:
    rng = random.Random(1)
    for k in range(experiments):
        doc = spec_doc([{"kind": "ab", "split": 50}]) | {"name": f"exp-{k}"}
        doc["variants"][0]["weight"] = doc["variants"][1]["weight"] = 50
        spec = load_spec(doc)
        store.put_experiment(spec)
        change_state(store, spec.name, Action.START)
        plan, units = FoldPlan.from_spec(spec), [f"u{i}" for i in range(1000)]
        arms = {u: a.variant for u, a in zip(units, assign_many(spec, units), strict=True)}
        store.record_exposures(spec.name, "main", plan, {u: (arms[u], 1.0) for u in units})
        clicks = [Event(f"c-{u}", u, "click", 1.0, 1.0) for u in units if rng.random() < 0.1]
        store.ingest_events(spec.name, "main", plan, clicks)


def conclude_with_looks(store: Store) -> None:
    for record in store.list_experiments():
        arms = phase_report(store, record)["arms"]
        decision = decide(analysed_spec(record), ExperimentStats.from_report(arms))
        for i in range(LOOKS):
            look = look_of(decision, arms, record=record, phase=record.phase, at=time.time(),
                           by="controller") | {"look": i + 1}  # fmt: skip
            store.append_look(record.uid, look, fingerprint=str(i), cap=LOOKS)
        status = replace(record.status, state=State.CONCLUDED, outcome=Outcome.PROMOTED)
        store.commit_status(record.name, end_phase(status, time.time()),
                            expected_version=record.status.version)  # fmt: skip


def timed(what: str, work: Callable[[], object]) -> None:
    start = time.perf_counter()
    work()
    print(f"{what:<58} {(time.perf_counter() - start) * 1000:>9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=100)
    parser.add_argument("--store", help="default: a new SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(args.store or f"sqlite:///{Path(tmp) / 'abmesh.db'}")
        seed(store, args.experiments)
        names = [r.name for r in store.list_experiments()]
        index_rows(store)  # imports and first reads out of the way
        print(f"{args.experiments} experiments{'':<40}{'ms':>9}")
        timed("running: the index's rows", lambda: index_rows(store))
        timed("running: every report built", lambda: [build_report(store, n) for n in names])
        timed("running: ten report pages rendered",
              lambda: [render_html(build_report(store, n)) for n in names[:10]])  # fmt: skip
        conclude_with_looks(store)
        timed(f"concluded, {LOOKS} looks each: the index's rows", lambda: index_rows(store))
        timed(f"concluded: every phase's {LOOKS} looks read whole",
              lambda: [store.looks(r.uid, r.phase) for r in store.list_experiments()])  # fmt: skip
        timed("concluded: every report built", lambda: [build_report(store, n) for n in names])
        store.close()


if __name__ == "__main__":
    main()
