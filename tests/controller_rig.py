"""A controller rig for fast tests: a real store, a fake router and metrics provider, and a
clock the test moves."""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controlplane.controller import Controller
from controlplane.lifecycle import Action, apply_spec, change_state
from controlplane.metrics import Counts, Measurement, Phase
from controlplane.routing.plan import RoutePlan
from controlplane.routing.routers import RouterError
from controlplane.targets import Defaults, Resolved, Routers
from experiments.folding import Event, FoldPlan
from experiments.loader import load_spec
from experiments.localstack import model_variants
from experiments.spec import ExperimentSpec
from experiments.spec_rollout import OperationalGuardrail
from experiments.store import open_store


class FakeRouter:
    name = "fake"

    def __init__(self) -> None:
        self.plans: list[RoutePlan] = []
        self.fail = 0  # raise on this many next calls

    def set_routes(self, plan: RoutePlan) -> bool:
        if self.fail:
            self.fail -= 1
            raise RouterError("the mesh said no")
        changed = not self.plans or self.plans[-1] != plan
        self.plans.append(plan)
        return changed

    def get_routes(self) -> Any:
        return self.plans[-1] if self.plans else None

    @property
    def weights(self) -> dict[str, int]:
        return {v: w for v, w in self.plans[-1].weights if w}


class FakeProvider:
    """Guardrail readings by preset name (or guardrail name); None is no data, a Measurement
    is answered as it is (an error, a sample size)."""

    def __init__(self) -> None:
        self.values: dict[str, float | Measurement | None] = {
            "p99_latency_ms": 20.0, "error_ratio": 0.0}  # fmt: skip
        self.asked: list[dict[str, str]] = []  # the variables of every query
        self.arms: dict[str, list[float]] = {}  # variant/latency -> cumulative [requests, events]
        self.requests = 1000.0
        self.errors: dict[str, float] = {}  # variant -> 5xx answers per read
        self.slow: dict[str, float] = {}  # variant -> requests over 100 ms per read

    def query(self, guardrail: OperationalGuardrail, variables: Mapping[str, str]) -> Measurement:
        self.asked.append(dict(variables))
        value = self.values.get(guardrail.query or guardrail.name)
        if isinstance(value, Measurement):
            return value
        return Measurement.of(value, sample=self.requests)

    def counters(
        self, guardrail: OperationalGuardrail, variables: Mapping[str, str], at: float
    ) -> Counts:
        """Counters that grow by `requests` per read, `errors[variant]` of them 5xx answers
        (or for latency `slow[variant]` of them over 100 ms)."""
        self.asked.append(dict(variables))
        latency = guardrail.query == "p99_latency_ms"
        arm = self.arms.setdefault(f"{variables['variant']}/{latency}", [0.0, 0.0])
        arm[0] += self.requests
        arm[1] += (self.slow if latency else self.errors).get(variables["variant"], 0.0)
        return Counts(Phase.OK, arm[0], {"gt_100" if latency else "errors": arm[1]})


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# The rig's guardrails: single readings the fake provider answers by name, so a test sets a
# guardrail's value directly (the relative ones have their own tests).
THRESHOLDS = [{"name": "p99_latency_ms", "query": "p99_latency_ms", "limit": 150},
              {"name": "error_ratio", "query": "error_ratio", "limit": 0.001}]  # fmt: skip


def spec_of(name: str = "ranker", steps: tuple[int, ...] = (10, 50), **rollout: Any) -> Any:
    doc: dict[str, Any] = {
        "name": name,
        "variants": model_variants(),
        "metrics": {"primary": {"name": "click", "kind": "conversion"}},
        "rollout": {"phases": [{"kind": "canary", "steps": list(steps), "checks": 1},
                               {"kind": "ab", "split": 50}, {"kind": "promote"}],
                    "guardrails": THRESHOLDS, **rollout},
    }  # fmt: skip
    return doc


class Rig:
    """A store, the fakes, and controllers that share them."""

    def __init__(self, store_url: str, tmp: Path) -> None:
        self.url, self.store = store_url, open_store(store_url)
        self.clock, self.provider = Clock(), FakeProvider()
        self.routers: dict[str, FakeRouter] = {}
        self.defaults = Defaults(router="manifests", out_dir=tmp)

    def router_for(self, target: Resolved) -> FakeRouter:
        return self.routers.setdefault(target.where, FakeRouter())

    def router(self, name: str = "ranker") -> FakeRouter:
        return next(r for where, r in self.routers.items() if where.endswith(f"{name}.yaml"))

    def controller(self, owner: str = "c1", **options: Any) -> Controller:
        return Controller(
            open_store(self.url), Routers(self.defaults, make=self.router_for), self.provider,
            owner=owner, interval=1.0, clock=self.clock, **options,
        )  # fmt: skip

    def start(self, doc: dict[str, Any]) -> ExperimentSpec:
        spec = load_spec(doc)
        apply_spec(self.store, spec)
        change_state(self.store, spec.name, Action.START)
        return spec

    def feed_clicks(
        self, spec: ExperimentSpec, phase: str, rates: dict[str, float], units: int = 4000,
        prefix: str = "u", seed: int = 7,
    ) -> FoldPlan:  # fmt: skip
        """Expose `units` units, alternately per arm, and fold a click for each with its arm's
        rate (a fixed seed); returns the fold plan used.  Another `prefix`: other units."""
        plan, rng = FoldPlan.from_spec(spec), random.Random(seed)
        arms = {f"{prefix}{i}": "stable" if i % 2 else "candidate" for i in range(units)}
        self.store.record_exposures(spec.name, phase, plan, {u: (a, 1.0) for u, a in arms.items()})
        clicks = [Event(f"e-{u}", u, "click", 1.0, 2.0) for u, a in arms.items()
                  if rng.random() < rates[a]]  # fmt: skip
        self.store.ingest_events(spec.name, phase, plan, clicks)
        return plan

    def tick_with_data(
        self, spec: ExperimentSpec, controller: Controller, phase: str, batches: int,
        rates: dict[str, float], *, step_s: float = 10.0, until_concluded: bool = True,
    ) -> int:  # fmt: skip
        """Up to `batches` times: fold 300 more units (a seed per batch), move the clock and
        tick; stop once the rollout concluded.  Returns the batches fed."""
        for batch in range(batches):
            self.feed_clicks(spec, phase, rates, units=300, prefix=f"{phase}-{batch}-", seed=batch)
            self.clock.now += step_s
            controller.tick()
            if until_concluded and self.store.get_experiment(spec.name).status.outcome:
                return batch + 1
        return batches

    def actions(self, name: str = "ranker") -> list[str]:
        """The rollout's moves (lifecycle commands left out)."""
        entries = self.store.audit(self.store.get_experiment(name).uid)
        return [e["action"] for e in entries if e["action"] != "lifecycle"]

    def share(self, name: str = "ranker") -> float:
        return self.store.get_experiment(name).effective_spec.variant("candidate").weight
