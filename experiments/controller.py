"""The rollout controller: one tick = one step for every running experiment with a rollout.

A tick: take (or renew) the controller lease, so only one controller acts; for each experiment
read its rollout state, the operational guardrails (Prometheus) and, in an A/B phase, the
statistics; judge (analysis.decide for the test, thresholds for the canary); move; write the
routes through the mesh router (a no-op write is skipped) and the arms' weights into the spec
(so assignment follows); persist the state with a compare-and-set and append to the audit log.
Each tick is re-runnable: a crash between steps repeats nothing twice and skips nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection
from typing import Any

from experiments.errors import ConflictError
from experiments.folding import exposures_of
from experiments.metrics_provider import MetricsProvider
from experiments.rollout_state import (
    Request,
    RolloutState,
    RolloutStatus,
    enter_phase,
    promote,
    roll_back,
    split,
)
from experiments.routing.plan import plan_routes
from experiments.routing.routers import MeshRouter
from experiments.spec import ExperimentSpec, Variant
from experiments.spec_rollout import ABTest, Canary
from experiments.store import ExperimentRecord, ExperimentStatus, Store
from experiments.verdict import read_guardrails

LEASE = "controller"
log = logging.getLogger("abmesh.controller")
Labels = Callable[[Variant], dict[str, str]]


class Controller:
    def __init__(
        self,
        store: Store,
        router: MeshRouter,
        provider: MetricsProvider,
        labels: Labels,
        *,
        interval: float = 10.0,
        settle_s: float = 0.0,
        experiments: Collection[str] = (),
        owner: str | None = None,
    ) -> None:
        self.store, self.router, self.provider, self.labels = store, router, provider, labels
        self.interval = interval
        # A check right after a step mostly sees the previous step's traffic (the queries'
        # rate window): checks count only once the step is this old.
        self.settle_s = settle_s
        self.experiments = set(experiments)  # empty: every experiment with a rollout
        self.owner = owner or f"controller-{uuid.uuid4().hex[:8]}"
        # The lease outlives the slowest tick (Prometheus, Envoy and API timeouts included),
        # and is checked again before each experiment's state is written.
        self.lease_s = max(3 * interval, 60.0)

    def tick(self) -> bool:
        """One step for every experiment with a rollout; False if not the leader."""
        if not self.store.acquire_lease(LEASE, self.owner, ttl_s=self.lease_s):
            return False
        for record in self.store.list_experiments():
            if record.spec.rollout is None or record.status is ExperimentStatus.DRAFT:
                continue
            if self.experiments and record.name not in self.experiments:
                continue
            try:
                self.step(record)
            except Exception:  # one broken experiment must not hold up the others' rollbacks
                log.exception("rollout of %s: this tick failed; the next one retries", record.name)
        return True

    def run(self, stop: Callable[[], bool]) -> None:
        while not stop():
            started = time.monotonic()
            try:
                self.tick()
            except Exception:  # one bad tick must not end the loop; the next retries it
                log.exception("controller tick failed")
            time.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        self.store.release_lease(LEASE, self.owner)

    def step(self, record: ExperimentRecord) -> None:
        """Judge, then persist the new state (compare-and-set), then apply it.  Applying is
        idempotent and happens every tick, so a crash after the write, a stale controller or a
        hand-edited route is put right by the next tick; a controller that lost its lease or
        the compare-and-set applies nothing."""
        spec = record.spec
        doc, version = self.store.get_control(spec.name)
        if doc is None and record.status is not ExperimentStatus.RUNNING:
            return
        audit: list[dict[str, Any]] = []
        if doc is None:
            state = RolloutState()
            audit.append(self._entry(state, "start", enter_phase(spec, state, 0)))
            if isinstance(self._phase(spec, state), ABTest):
                state.stats_phase = self._new_stats_phase(spec)
        else:
            state = RolloutState.from_dict(doc)
            if record.status is ExperimentStatus.STOPPED and not state.status.final:
                audit.append(
                    self._entry(
                        state, "rollback", roll_back(spec, state, "the experiment was stopped")
                    )
                )
            elif state.request is not None:
                audit.append(self._entry(state, state.request.value, self._manual(spec, state)))
            elif (
                record.status is ExperimentStatus.RUNNING and state.status is RolloutStatus.RUNNING
            ):
                audit += self._advance(record, state)
        if doc is None or state.to_dict() != doc:
            if not self.store.acquire_lease(LEASE, self.owner, ttl_s=self.lease_s):
                return
            try:
                self.store.put_control(spec.name, state.to_dict(), version)
            except ConflictError:
                log.warning(
                    "rollout state of %s changed under us; the next tick redoes it", spec.name
                )
                return
        changed = self.router.set_routes(plan_routes(spec, state.weights, state.mode))
        self._reconcile_arm_weights(record, state.weights)
        live = time.time()  # the router returns once the mesh confirms the new routes
        for entry in audit:
            if changed:
                entry["routes_live_after_s"] = round(live - entry["at"], 4)
            self.store.append_audit(spec.name, entry)

    def _manual(self, spec: ExperimentSpec, state: RolloutState) -> str:
        request, state.request = state.request, None
        if request is Request.ROLLBACK and not state.status.final:
            return roll_back(spec, state, "manual rollback")
        if request is Request.PROMOTE and not state.status.final:
            return promote(spec, state, state.winner or spec.candidate_variant.key, "manual")
        if request is Request.PAUSE and state.status is RolloutStatus.RUNNING:
            state.status = RolloutStatus.PAUSED
            return "paused by hand"
        if request is Request.RESUME and state.status is RolloutStatus.PAUSED:
            state.status, state.passes = RolloutStatus.RUNNING, 0
            return "resumed by hand"
        return f"{request} ignored: the rollout is {state.status.value}"

    def _advance(self, record: ExperimentRecord, state: RolloutState) -> list[dict[str, Any]]:
        spec = record.spec
        assert spec.rollout is not None
        phase = spec.rollout.phases[state.phase]
        thresholds = read_guardrails(spec, self.provider, self.labels(spec.candidate_variant))
        checks = [t.check() for t in thresholds]
        readings = [
            {"name": c.name, "value": c.value, "limit": c.limit, "status": c.status} for c in checks
        ]
        if isinstance(phase, Canary):
            return self._canary(record, state, phase, checks, readings)
        if isinstance(phase, ABTest):
            return self._ab(record, state, thresholds, readings)
        return [self._entry(state, "promote", enter_phase(spec, state, state.phase))]

    def _canary(
        self,
        record: ExperimentRecord,
        state: RolloutState,
        phase: Canary,
        checks: list[Any],
        readings: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        from analysis.guardrails import Threshold

        spec = record.spec
        failed = [c for c in checks if c.status == "fail"]
        if failed:
            why = "; ".join(Threshold.describe(c) for c in failed)
            return [self._entry(state, "rollback", roll_back(spec, state, why), readings)]
        if any(c.status == "no_data" for c in checks):
            state.passes = 0
            return []
        if time.time() - state.step_started < self.settle_s:
            return []  # the readings still mostly cover the previous step
        state.passes += 1
        units = self._candidate_units(record) - state.step_units if phase.min_units else 0.0
        ready = (
            state.passes >= phase.checks
            and time.time() - state.step_started >= phase.min_duration_s
            and units >= phase.min_units
        )
        if not ready:
            return []
        if state.step + 1 < len(phase.steps):
            state.step, state.passes, state.step_started = state.step + 1, 0, time.time()
            state.step_units = self._candidate_units(record) if phase.min_units else 0.0
            share = phase.steps[state.step]
            state.weights = split(spec, share)
            what = f"canary step {state.step + 1} of {len(phase.steps)}: {share} % to the candidate"
            return [self._entry(state, "step", what, readings)]
        what = enter_phase(spec, state, state.phase + 1)
        if isinstance(self._phase(spec, state), ABTest):
            state.stats_phase = self._new_stats_phase(spec)
        action = "promote" if state.status is RolloutStatus.PROMOTED else "phase"
        return [self._entry(state, action, what, readings)]

    def _ab(
        self,
        record: ExperimentRecord,
        state: RolloutState,
        thresholds: list[Any],
        readings: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        from analysis import DecisionState, ExperimentStats, Status, decide
        from experiments.reporting import phase_report

        spec = record.spec
        report = phase_report(self.store, record, state.stats_phase or record.phase)
        previous = DecisionState.from_dict(state.decision) if state.decision else None
        decision = decide(spec, ExperimentStats.from_report(report["arms"]), thresholds, previous)
        state.decision = decision.state.to_dict()
        why = "; ".join(decision.reasons)
        if decision.status is Status.HARM:
            return [self._entry(state, "rollback", roll_back(spec, state, why), readings)]
        if decision.status is Status.WINNER and decision.winner:
            if decision.winner == spec.control_variant.key:
                state.status, state.reason = RolloutStatus.NO_DIFFERENCE, why
                state.weights = {spec.control_variant.key: 100}
                return [self._entry(state, "finish", f"stable model wins: {why}", readings)]
            if decision.winner != spec.candidate_variant.key:
                return []  # another arm is not what this rollout can promote
            state.winner = decision.winner
            what = f"{decision.winner} wins: {why} → {enter_phase(spec, state, state.phase + 1)}"
            return [self._entry(state, "promote", what, readings)]
        if decision.status is Status.NO_DIFFERENCE:
            state.status, state.weights = (
                RolloutStatus.NO_DIFFERENCE,
                {spec.control_variant.key: 100},
            )
            state.reason = why
            return [self._entry(state, "finish", f"no difference, stable kept: {why}", readings)]
        if decision.status is Status.INVALID:
            state.status, state.reason = RolloutStatus.PAUSED, why
            return [self._entry(state, "pause", f"invalid: {why}", readings)]
        return []

    @staticmethod
    def _phase(spec: ExperimentSpec, state: RolloutState) -> Any:
        assert spec.rollout is not None
        phases = spec.rollout.phases
        return phases[state.phase] if state.phase < len(phases) else None

    def _new_stats_phase(self, spec: ExperimentSpec) -> str:
        """A/B statistics start from zero (canary traffic is not the test's sample)."""
        used = self.store.phases(spec.name)
        name = f"ab-{len(used) + 1}"
        return self.store.set_phase(spec.name, name).phase

    def _candidate_units(self, record: ExperimentRecord) -> float:
        stats, _ = self.store.phase_stats(record.name, record.phase)
        return float(exposures_of(stats).get(record.spec.candidate_variant.key, 0))

    def _reconcile_arm_weights(self, record: ExperimentRecord, weights: dict[str, int]) -> None:
        """The arms' share follows the default route's, so assigned users move with the plan."""
        spec = record.spec
        if all(v.weight == weights.get(v.key, 0) for v in spec.variants):
            return
        data = spec.model_dump(mode="json", by_alias=True)
        for variant in data["variants"]:
            variant["weight"] = weights.get(variant["key"], 0)
        self.store.put_experiment(ExperimentSpec.model_validate(data))

    def _entry(
        self,
        state: RolloutState,
        action: str,
        what: str,
        readings: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        return {
            "at": time.time(),
            "by": self.owner,
            "action": action,
            "what": what,
            "status": state.status.value,
            "phase": state.phase,
            "step": state.step,
            "weights": dict(state.weights),
            "guardrails": readings or [],
        }
