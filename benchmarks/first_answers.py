"""How soon a freshly started service answers, and how fast its first heavy answers are.

    python benchmarks/first_answers.py [--starts 3]

Each start: `abmesh serve` on an SQLite store holding a running experiment with 4,000 exposed
units and their clicks; the time until /healthz and until /readyz answer 200 (the analysis
stack is warmed up in the background meanwhile, assignment/warmup.py), then the first verdict
(Argo's /decision), report, HTML report and Flagger webhook, each timed, and the same again.
A client thread assigns units all along; its slowest answer before and after readiness shows
what the warm-up costs concurrent assignments.  Times are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The service runs in its own process: let it import this checkout, not an installed copy.
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])

from assignment import assign_many  # noqa: E402
from controlplane.lifecycle import Action, change_state  # noqa: E402
from experiments import EXAMPLES_DIR, load_spec  # noqa: E402
from experiments.folding import Event, FoldPlan  # noqa: E402
from experiments.store import open_store  # noqa: E402
from tests.servers import start_service  # noqa: E402

TOKEN = "bench"
NAME = "ranker-v2"
CALLS = {
    "GET /decision": lambda http: http.get(f"/v1/experiments/{NAME}/decision"),
    "GET /report": lambda http: http.get(f"/v1/experiments/{NAME}/report"),
    "GET /report.html": lambda http: http.get(f"/v1/experiments/{NAME}/report.html"),
    "POST /v1/flagger/confirm-rollout": lambda http: http.post(
        "/v1/flagger/confirm-rollout", json={"name": NAME, "metadata": {"token": TOKEN}}
    ),
}


def prepare(url: str) -> None:
    store = open_store(url)
    spec = load_spec(EXAMPLES_DIR / "ranker-v2.yaml")
    store.put_experiment(spec)
    record = change_state(store, NAME, Action.START)
    plan, rng, now = FoldPlan.from_spec(spec), random.Random(1), time.time()
    units = [f"user-{i}" for i in range(4000)]
    arms = {u: a.variant for u, a in zip(units, assign_many(spec, units), strict=True)}
    store.record_exposures(NAME, record.phase, plan, {u: (v, now) for u, v in arms.items()})
    clicks = [Event(f"e-{u}", u, "click", 1.0, now) for u in units if rng.random() < 0.1]
    store.ingest_events(NAME, record.phase, plan, clicks)
    store.close()


def one_start(url: str, workdir: Path) -> list[tuple[str, float, int]]:
    rows: list[tuple[str, float, int]] = []
    began = time.perf_counter()
    service = start_service(url, workdir, admin_token=TOKEN, warmup=1)  # what is measured
    rows.append(("start -> /healthz 200", time.perf_counter() - began, 200))
    worst = {"before ready": 0.0, "after ready": 0.0}
    phase, stop = ["before ready"], threading.Event()

    def assign() -> None:
        with httpx.Client(base_url=service.url, timeout=30) as http:
            for i in range(10**9):
                if stop.is_set():
                    return
                start = time.perf_counter()
                http.get(f"/v1/assign/{NAME}", params={"unit": f"u-{i}"})
                worst[phase[0]] = max(worst[phase[0]], time.perf_counter() - start)
                time.sleep(0.005)

    load = threading.Thread(target=assign)
    load.start()
    try:
        with httpx.Client(
            base_url=service.url, timeout=60, headers={"authorization": f"Bearer {TOKEN}"}
        ) as http:
            while http.get("/readyz").status_code != 200:
                time.sleep(0.01)
            rows.append(("start -> /readyz 200", time.perf_counter() - began, 200))
            phase[0] = "after ready"
            for round_ in ("first", "second"):
                for name, call in CALLS.items():
                    start = time.perf_counter()
                    status = call(http).status_code
                    rows.append((f"{round_} {name}", time.perf_counter() - start, status))
    finally:
        stop.set()
        load.join()
        service.stop()
    rows += [(f"slowest assignment {k}", v, 200) for k, v in worst.items()]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url = f"sqlite:///{workdir / 'abmesh.db'}"
        prepare(url)
        runs = [one_start(url, workdir) for _ in range(args.starts)]
    print(f"{'step':42} " + " ".join(f"{f'start {i + 1} ms':>12}" for i in range(len(runs))))
    for i, (step, _, status) in enumerate(runs[0]):
        times = " ".join(f"{1000 * run[i][1]:>12.0f}" for run in runs)
        print(f"{step:42} {times}  ({status})")


if __name__ == "__main__":
    main()
