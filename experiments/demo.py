"""`abmesh demo`: the whole loop on one machine, with real parts.

It starts the assignment service (SQLite), Envoy in front of a stable and a candidate toy model,
Prometheus scraping Envoy, the controller (`envoy` router) and simulated users.  Each user asks
abmesh for its group, calls the model through Envoy with that header, and converts with a
probability that depends on the model that answered.  The rollout walks a canary, then an A/B
phase, to a decision: promotion by default; with `scenario="regression"` the candidate starts
failing at its second canary step and is rolled back (by then the canary's observed looks have
shown the effect for a while: the report's history); with `scenario="shadow"` a shadow phase
comes first, Envoy mirroring every stable request to the candidate, whose labels differ from
the stable model's on 3 % of requests: the comparison stops the rollout before any user is
served by it.  A live table shows the progress; the
report is written at the end; every process the demo started is stopped by its PID.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from controlplane.controller import Controller
from controlplane.lifecycle import Action, apply_spec, change_state
from controlplane.metrics import ProviderConfig, Providers
from controlplane.targets import Defaults, Routers
from experiments.errors import AbmeshError
from experiments.localstack import (
    RolloutStack,
    Service,
    model_variants,
    prometheus_binary,
    start_rollout_stack,
    start_service,
)
from experiments.report import build_report
from experiments.report_html import render_html
from experiments.spec import ExperimentSpec
from experiments.store import Store, open_store

NAME = "model-demo"
# What each model's answers make users do: a large lift in the fast run, a smaller one, which
# takes the test a few minutes to resolve, in the default run.
SCENARIOS = ("promote", "regression", "shadow")
COUNTRIES = ("US", "DE", "BR")
PLATFORMS = ("ios", "android", "web")
CONVERSION = {True: {"v1": 0.10, "v2": 0.15}, False: {"v1": 0.10, "v2": 0.125}}


class DemoError(AbmeshError):
    """The demo cannot run here (a part is missing)."""


@dataclass
class DemoResult:
    status: str
    seconds: float
    report: Path
    audit: list[dict[str, Any]]
    table: Table


def demo_spec(fast: bool, shadow: bool = False) -> ExperimentSpec:
    from experiments.loader import load_spec

    first = [{"kind": "shadow", "percent": 100, "max_duration_s": 600}] if shadow else []
    return load_spec(
        {
            "name": NAME,
            "variants": model_variants(),
            "metrics": {"primary": {"name": "purchase", "kind": "conversion"},
                        "secondary": [{"name": "revenue", "kind": "sum"}]},
            # Who the users are, for the report's per-segment effects.
            "segments": [{"name": "country", "values": list(COUNTRIES)},
                         {"name": "platform", "values": list(PLATFORMS)}],
            # Fast: a verdict from 30 units an arm, so the canary's looks show the effect
            # after seconds, not after the candidate's 5 % reached 100 units.
            "analysis": {"min_units_per_arm": 30 if fast else 100,
                         "n_star": 2000 if fast else 10_000},
            "rollout": {
                "phases": [
                    *first,
                    # Fast: a step holds 6 s, so a regression is caught within the canary
                    # (it takes a few seconds), with the canary's looks before it.
                    {"kind": "canary", "steps": [5, 20, 50], "checks": 1 if fast else 5,
                     "min_duration_s": 6 if fast else 30},
                    {"kind": "ab", "split": 50},
                    {"kind": "promote"},
                ]
            },
        }
    )  # fmt: skip


class Users:
    """Simulated users: assign, call the model through Envoy with the group header, convert."""

    def __init__(
        self,
        service: str,
        front: str,
        conversion: dict[str, float],
        threads: int = 4,
        pause: float = 0.0,
    ) -> None:
        self.service, self.front, self.conversion = service, front, conversion
        self.pause = pause  # between one user and the next, per thread
        self.served: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        events: list[dict[str, Any]] = []
        posted = time.monotonic()
        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                unit = f"user-{uuid.uuid4().hex[:12]}"
                who = {"segment.country": rng.choices(COUNTRIES, weights=(5, 3, 2))[0],
                       "segment.platform": rng.choice(PLATFORMS)}  # fmt: skip
                try:
                    a = http.get(f"{self.service}/v1/assign/{NAME}",
                                 params={"unit": unit, **who}).json()  # fmt: skip
                    header = a["header"]
                    # The user's own request: a model's answer (and prediction) depends on it.
                    reply = http.get(self.front, params={"user": unit},
                                     headers={header["name"]: header["value"]})  # fmt: skip
                    model = reply.headers.get("x-model", "?")
                    self.served[model] = self.served.get(model, 0) + 1
                    if reply.status_code == 200 and rng.random() < self.conversion.get(model, 0.0):
                        events.append({"event_id": uuid.uuid4().hex, "experiment": NAME,
                                       "unit": unit, "metric": "purchase"})  # fmt: skip
                        events.append({"event_id": uuid.uuid4().hex, "experiment": NAME,
                                       "unit": unit, "metric": "revenue",
                                       "value": round(rng.lognormvariate(3, 0.8), 2)})  # fmt: skip
                    # Posted in batches, but within a quarter second: a conversion that lags
                    # its exposure counts against the arm whose units are newest, and in a
                    # canary that is the candidate, whose share keeps growing.
                    if len(events) >= 20 or (events and time.monotonic() - posted > 0.25):
                        http.post(f"{self.service}/v1/events", json={"events": events})
                        events, posted = [], time.monotonic()
                except (httpx.HTTPError, KeyError, ValueError):
                    time.sleep(0.05)  # the service or Envoy is busy or restarting: try again
                time.sleep(self.pause)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def _table(store: Store, started: float, served: dict[str, int]) -> Table:
    from analysis import ExperimentStats, decide
    from experiments.reporting import phase_report

    record = store.get_experiment(NAME)
    state = record.status.rollout or {}
    table = Table(title=f"abmesh demo: {NAME}", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("elapsed", f"{time.time() - started:.0f} s")
    where = f"phase {state.get('phase', 0) + 1}, step {state.get('step', 0) + 1}"
    table.add_row("rollout", f"{state.get('status', 'starting')}, {where}")
    table.add_row(
        "route split", ", ".join(f"{k} {v} %" for k, v in state.get("weights", {}).items())
    )
    table.add_row("requests served", ", ".join(f"{k} {v}" for k, v in sorted(served.items())))
    arms = phase_report(store, record)["arms"]
    table.add_row("units (A/B sample)", ", ".join(f"{v} {a['exposures']}" for v, a in arms.items()))
    decision = decide(record.spec, ExperimentStats.from_report(arms))
    running = ((state.get("decision") or {}).get("intervals") or {}).get("purchase:candidate")
    for c in decision.comparisons:
        if c.role == "primary" and c.estimate is not None:
            table.add_row("purchase effect", f"{c.estimate:+.4f} now")
    if running:
        p, low, high = (float("nan") if x is None else x for x in running)
        # what the controller acts on: the running minimum p and the intersected interval
        table.add_row("always-valid", f"interval [{low:.4f}, {high:.4f}], p {p:.3g}")
    audit = store.audit(record.uid)
    if audit:
        last = audit[-1]
        readings = ", ".join(
            f"{g['name']} {'no data' if g['value'] is None else format(g['value'], '.3g')}"
            for g in last.get("guardrails", [])
        )
        table.add_row("last action", f"{last.get('action')}: {last.get('what', '')[:90]}")
        table.add_row("guardrails", readings or "–")
    return table


def run_demo(
    workdir: Path, *, fast: bool = False, scenario: str = "promote", console: Console | None = None
) -> DemoResult:
    if scenario not in SCENARIOS:
        raise DemoError(f"scenario must be one of {', '.join(SCENARIOS)}, not {scenario!r}")
    if prometheus_binary() is None:
        raise DemoError(
            "Prometheus is not installed: `apt-get install -y --no-install-recommends prometheus`"
        )
    console = console or Console()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    stack: RolloutStack = start_rollout_stack(workdir)
    store_url = f"sqlite:///{workdir / 'abmesh.db'}"
    store = open_store(store_url)
    service: Service | None = None
    users: Users | None = None
    stop = threading.Event()
    loop: threading.Thread | None = None
    try:
        # On loopback, for this run only: the simulated users send events without a token.
        service = start_service(
            store_url, workdir, insecure=True, refresh_interval=0.2, exposure_flush_interval=0.2,
            snapshot_interval=2,
        )  # fmt: skip
        apply_spec(store, demo_spec(fast, shadow=scenario == "shadow"))
        if scenario == "shadow":  # both models post their predictions; the candidate differs
            for model, variant in (("v1", "stable"), ("v2", "candidate")):
                stack.set_model(model, report_to=service.url, experiment=NAME,
                                variant=variant, flip_rate=0.03 if model == "v2" else 0.0)
        change_state(store, NAME, Action.START, by="demo")
        defaults = Defaults(
            envoy_routes=stack.routes_file, envoy_admin=stack.admin,
            clusters={"stable": "v1", "candidate": "v2"},
        )  # fmt: skip
        controller = Controller(
            open_store(store_url),
            Routers(defaults),
            Providers(ProviderConfig(stack.prometheus_url, mesh="envoy", window="3s")),
            owner="demo-controller",
            interval=1.0,
            settle_s=3.0,
        )
        loop = threading.Thread(target=controller.run, args=(stop,), daemon=True)
        loop.start()
        # The default run paces its users (about 100 a second) so the loop can be watched.
        users = Users(service.url, stack.front, CONVERSION[fast], pause=0.0 if fast else 0.03)
        broken = False
        deadline = started + (150 if fast else 420)
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while time.time() < deadline:
                doc = store.get_experiment(NAME).status.rollout
                live.update(_table(store, started, users.served))
                if doc and doc["status"] in ("promoted", "rolled_back", "no_difference"):
                    break
                if scenario == "regression" and not broken and doc and doc["step"] >= 1:
                    stack.set_model("v2", error_rate=0.05)  # the candidate starts failing
                    broken = True
                time.sleep(0.5)
            final = _table(store, started, users.served)
            live.update(final)
        record = store.get_experiment(NAME)
        report = workdir / "report.html"
        report.write_text(render_html(build_report(store, NAME)))
        return DemoResult(
            (record.status.rollout or {}).get("status", "unfinished"),
            time.time() - started,
            report,
            store.audit(record.uid),
            final,
        )
    finally:
        if users is not None:
            users.stop()
        stop.set()
        if loop is not None:
            loop.join(timeout=10)
        if service is not None:
            service.stop()
        store.close()
        stack.stop()
