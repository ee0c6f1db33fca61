"""The rollout controller: each tick moves every experiment it holds a lease on by one step.

Per experiment, a tick decides, then applies:
1. Decide.  Read the experiment (spec + status), its operational guardrails (the metrics
   provider) and, in an A/B phase, its statistics; compute the next rollout state, the status
   (effective weights, analysis phase, conditions, conclusion) and the audit entries.
2. Persist all of it in one compare-and-set write of the status (`Store.commit_status`: one
   SQLite transaction, one Redis MULTI/EXEC).  A conflict (another writer got in) writes
   nothing; the next tick decides again from what is stored, so every move is audited once.
3. Apply the routes of the stored state to the experiment's own target, idempotently, every
   tick until confirmed: a crash or a router error after step 2 is repaired by the next tick.

A spec change during a rollout (a new generation) is observed at the next tick: changed arms
(variants, destinations, control) or metrics start a new analysis phase and restart the rollout
at its first step; a changed `rollout.phases` takes effect at the next step (a phase list that
no longer has the current phase restarts); any other change applies at once.  The controller
never writes the spec, so a GitOps tool re-applying the same spec changes nothing.

Leases are per experiment (`<uid>#rollout`), so several controllers share the work and each
experiment is driven by exactly one; an owner id that survives restarts resumes its leases at
once, and a dead controller's leases lapse after `lease_s`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import replace
from typing import Any

from controlplane.observability import ControllerTelemetry
from controlplane.rollout import (
    Request,
    RolloutState,
    RolloutStatus,
    enter_phase,
    finish,
    next_step,
    promote,
    roll_back,
)
from controlplane.routing.plan import RoutePlan, plan_routes
from controlplane.targets import Resolved, Routers, blocker, claimant, claims
from experiments.errors import AbmeshError, ConflictError, NotFoundError
from experiments.folding import exposures_of
from experiments.metrics_provider import MetricsProvider, query_labels
from experiments.spec import ExperimentSpec
from experiments.spec_rollout import ABTest, Canary, OnNoData
from experiments.status import State, Status, end_phase, new_phase_name
from experiments.status import enter_phase as enter_analysis_phase
from experiments.store import ExperimentRecord, Store
from experiments.verdict import read_guardrails

log = logging.getLogger("abmesh.controller")
Audit = list[dict[str, Any]]


MEMBER = "controller#"  # the lease each live controller holds under its own id


def lease_name(uid: str) -> str:
    return f"{uid}#rollout"


def default_lease_s(interval: float) -> float:
    """A few intervals: a dead controller's experiments are taken over within this plus one
    interval.  A live one renews every tick and checks it still holds the lease before it
    writes, so a slow tick that outlives its lease writes nothing."""
    return max(3 * interval, 5.0)


class Controller:
    def __init__(
        self,
        store: Store,
        routers: Routers,
        provider: MetricsProvider,
        *,
        owner: str,
        interval: float = 10.0,
        settle_s: float = 0.0,
        lease_s: float | None = None,
        experiments: Collection[str] = (),
        clock: Callable[[], float] = time.time,
        telemetry: ControllerTelemetry | None = None,
    ) -> None:
        self.store, self.routers, self.provider = store, routers, provider
        self.owner, self.interval, self.clock = owner, interval, clock
        # A check right after a step mostly sees the previous step's traffic (the queries'
        # rate window): checks count only once the step is this old.
        self.settle_s = settle_s
        self.lease_s = lease_s if lease_s is not None else default_lease_s(interval)
        self.experiments = set(experiments)  # empty: every experiment with a rollout
        self.telemetry = telemetry or ControllerTelemetry(clock=clock)
        self.held: set[str] = set()  # uids whose lease this controller holds
        self.store_ok: tuple[bool, str] = (False, "no tick yet")
        self._shown: set[str] = set()  # experiments with series in the telemetry

    # the loop

    def run(self, stop: threading.Event) -> None:
        """Tick every `interval` seconds until `stop` is set; the caller releases the leases."""
        while not stop.is_set():
            started = time.monotonic()
            self.tick()
            stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def release_leases(self) -> None:
        for uid in sorted(self.held):
            try:
                self.store.release_lease(lease_name(uid), self.owner)
            except AbmeshError as exc:  # the lease lapses on its own
                log.warning("lease of %s not released: %s", uid, exc)
        self.held.clear()
        self.telemetry.leases(0)
        with contextlib.suppress(AbmeshError):  # it lapses on its own
            self.store.release_lease(f"{MEMBER}{self.owner}", self.owner)

    def tick(self) -> None:
        """One step for every experiment this controller can hold; never raises."""
        started, ok = time.monotonic(), True
        try:
            records = self.store.list_experiments()
            self.store_ok = (True, "store reachable")
        except AbmeshError as exc:
            self.store_ok = (False, f"store: {exc}")
            log.warning("tick skipped: %s", exc)
            self.telemetry.tick_done(time.monotonic() - started, ok=False)
            return
        targets: dict[str, Resolved] = {}
        for record in records:
            if record.spec.rollout is not None:
                try:
                    targets[record.uid] = self.routers.resolve(record.spec)
                except AbmeshError as exc:
                    log.warning("rollout of %s: no route target: %s", record.name, exc)
        holders = claims(
            (r, targets[r.uid])
            for r in records
            if r.uid in targets and claimant(r, self._settled(r, targets[r.uid]))
        )
        wanted = [r for r in records if r.uid in targets and self._wanted(r, targets[r.uid])]
        held: set[str] = set()
        ordered, fair = self._share(wanted)
        for record in ordered:
            if len(held) >= fair or not self._lease(record.uid):
                continue
            held.add(record.uid)
            try:
                self.step(record, targets[record.uid], holders)
            except Exception:  # one broken experiment must not hold up the others' rollbacks
                ok = False
                log.exception("rollout of %s: this tick failed; the next one retries", record.name)
        for uid in self.held - held:  # concluded and settled, or deleted
            self.store.release_lease(lease_name(uid), self.owner)
        self.held = held
        names = {r.name for r in records}
        for gone in self._shown - names:
            self.telemetry.forget(gone)
        self._shown = names & self._shown
        self.telemetry.leases(len(held))
        self.telemetry.tick_done(time.monotonic() - started, ok=ok)

    def _share(self, wanted: list[ExperimentRecord]) -> tuple[list[ExperimentRecord], int]:
        """The order to try this tick's experiments in (those this controller holds first) and
        its fair share of them.  Controllers announce themselves with a lease of their own, so
        a newcomer gets its share as the others give up what they hold beyond theirs."""
        self.store.acquire_lease(f"{MEMBER}{self.owner}", self.owner, ttl_s=self.lease_s)
        members = max(1, len(self.store.lease_holders(MEMBER)))
        fair = -(-len(wanted) // members)
        mine = [r for r in wanted if r.uid in self.held]
        for extra in mine[fair:]:
            self.store.release_lease(lease_name(extra.uid), self.owner)
        return mine[:fair] + [r for r in wanted if r.uid not in self.held], fair

    def _wanted(self, record: ExperimentRecord, target: Resolved) -> bool:
        if self.experiments and record.name not in self.experiments:
            return False
        if record.state is State.DRAFT:
            return False
        # Concluded with its final routes confirmed: nothing left to do, the target is free.
        return not (record.state is State.CONCLUDED and self._settled(record, target))

    def _lease(self, uid: str) -> bool:
        return self.store.acquire_lease(lease_name(uid), self.owner, ttl_s=self.lease_s)

    def _settled(self, record: ExperimentRecord, target: Resolved) -> bool:
        """The rollout ended and the target confirmed its final routes."""
        state = _state(record.status)
        routes = record.status.routes or {}
        return (
            state is not None
            and state.status.final
            and routes.get("hash") == _route_hash(record, target, state)
        )

    # one experiment

    def step(
        self, record: ExperimentRecord, target: Resolved, holders: dict[Any, ExperimentRecord]
    ) -> None:
        now, status = self.clock(), record.status
        held_by = blocker(record, target, holders)
        if held_by is not None:
            why = (
                f"{target.where} is held by experiment {held_by.name!r} (uid {held_by.uid});"
                " this rollout waits until that one concludes"
            )
            self._note(record, status.with_condition("RouteTargetReady", False, "TargetClaimed",
                                                     why, now))  # fmt: skip
            return
        state, audit = _state(status), Audit()
        if state is None:
            if status.state is not State.RUNNING:
                return
            state = RolloutState()
            status = self._start(record, state, status, now, audit, "start")
        else:
            if status.observed_generation != record.generation:
                state, status = self._observe(record, state, status, now, audit)
            if state.request is not None:
                audit.append(self._entry(record, state, state.request.value,
                                         self._manual(record.spec, state)))  # fmt: skip
            elif status.state is State.CONCLUDED and not state.status.final:
                what = roll_back(record.spec, state, "the experiment was stopped")
                audit.append(self._entry(record, state, "rollback", what))
            elif status.state is State.RUNNING and state.status is RolloutStatus.RUNNING:
                status = self._advance(record, state, status, now, audit)
        status = self._reflect(record, state, status, now)
        if status != record.status:
            if not self._lease(record.uid):
                return
            try:
                record = self.store.commit_status(
                    record.name, status, expected_version=record.status.version, audit=audit
                )
            except (ConflictError, NotFoundError) as exc:
                log.warning("rollout of %s: %s; the next tick decides again", record.name, exc)
                return
            for entry in audit:
                self.telemetry.decision(entry["action"])
        self._show(record, state)
        self._apply(record, target, state)

    def _start(
        self,
        record: ExperimentRecord,
        state: RolloutState,
        status: Status,
        now: float,
        audit: Audit,
        action: str,
        why: str = "",
    ) -> Status:
        """Enter the plan's first phase; an A/B phase (or a restart) gets a fresh sample."""
        what = enter_phase(record.spec, state, 0, now)
        first = _phase(record.spec, state)
        if isinstance(first, ABTest) or action == "restart":
            base = "ab" if isinstance(first, ABTest) else "canary"
            planned = dict(state.weights) if isinstance(first, ABTest) else None
            status = enter_analysis_phase(status, new_phase_name(status, base), now, planned)
        audit.append(self._entry(record, state, action, f"{why}{what}"))
        return status

    def _observe(
        self, record: ExperimentRecord, state: RolloutState, status: Status, now: float,
        audit: Audit,
    ) -> tuple[RolloutState, Status]:  # fmt: skip
        """The rules for a spec that changed during the rollout (module docstring)."""
        from controlplane.lifecycle import sample_changed

        spec, generation = record.spec, record.generation
        status = replace(status, observed_generation=generation)
        try:
            old = self.store.get_experiment(record.name, record.status.observed_generation).spec
        except NotFoundError:
            return state, status
        if state.status.final:
            return state, status
        assert spec.rollout is not None
        assert old.rollout is not None
        phases = spec.rollout.phases
        gone = state.phase >= len(phases) or phases[state.phase].kind != _kind(old, state)
        why = ""
        if sample_changed(old, spec):
            why = f"generation {generation} changed the arms or metrics; "
        elif old.rollout.phases != phases and gone:
            why = f"generation {generation} has no phase {state.phase + 1} of this kind; "
        if why:
            state = RolloutState()
            return state, self._start(record, state, status, now, audit, "restart", why)
        if old.rollout.phases != phases:
            what = f"generation {generation}: the new plan takes effect at the next step"
            audit.append(self._entry(record, state, "replan", what))
        return state, status

    def _advance(
        self, record: ExperimentRecord, state: RolloutState, status: Status, now: float,
        audit: Audit,
    ) -> Status:  # fmt: skip
        from analysis.guardrails import Threshold

        spec = record.spec
        assert spec.rollout is not None
        phase = _phase(spec, state)
        if phase is None or not isinstance(phase, Canary | ABTest):
            audit.append(self._entry(record, state, "promote",
                                     enter_phase(spec, state, state.phase, now)))  # fmt: skip
            return status
        thresholds = read_guardrails(spec, self.provider, self._labels(record, spec))
        checks = [t.check() for t in thresholds]
        readings = [{"name": c.name, "value": c.value, "limit": c.limit, "status": c.status}
                    for c in checks]  # fmt: skip
        failed = [c for c in checks if c.status == "fail"]
        missing = [c for c in checks if c.status == "no_data"]
        healthy = False if failed else (None if missing else True)
        reason = "GuardrailFailed" if failed else ("NoData" if missing else "WithinLimits")
        message = "; ".join(Threshold.describe(c) for c in failed or missing)
        status = status.with_condition("GuardrailsHealthy", healthy, reason, message, now)
        if failed:
            what = roll_back(spec, state, "; ".join(Threshold.describe(c) for c in failed))
            audit.append(self._entry(record, state, "rollback", what, readings))
            return status
        if not missing:
            state.data_at = now
            held = status.condition("Progressing")
            if held is not None and held.reason == "NoData":
                state.resumed_at = now  # the step's evidence starts again
        late = self._late(spec, state, phase, now)
        if late is not None:
            kind, why = late
            if spec.rollout.on_no_data is OnNoData.ROLLBACK:
                audit.append(self._entry(record, state, "rollback",
                                         roll_back(spec, state, why), readings))  # fmt: skip
                return status
            old = status.condition("Progressing")
            if old is None or old.reason != kind:
                audit.append(self._entry(record, state, "hold", f"held: {why}", readings))
            state.passes = 0
            return status.with_condition("Progressing", False, kind, why, now)
        status = status.with_condition("Progressing", True, "Progressing", "", now)
        if isinstance(phase, Canary):
            entry = self._canary(record, state, status, phase, bool(missing), now)
        else:
            entry = self._ab(record, state, status, thresholds, now)
        if entry is not None:
            audit.append({**entry, "guardrails": readings})
            if isinstance(_phase(spec, state), ABTest) and not isinstance(phase, ABTest):
                planned = dict(state.weights)
                status = enter_analysis_phase(status, new_phase_name(status, "ab"), now, planned)
        return status

    def _late(
        self, spec: ExperimentSpec, state: RolloutState, phase: Canary | ABTest, now: float
    ) -> tuple[str, str] | None:
        """Past the progress deadline: no guardrail data, or a canary step that does not end."""
        assert spec.rollout is not None
        deadline = spec.rollout.progress_deadline_s
        quiet = now - max(state.data_at, state.step_started)
        if quiet > deadline:
            return "NoData", f"no guardrail data for {quiet:.0f} s (deadline {deadline:g} s)"
        if isinstance(phase, Canary):
            allowed = max(deadline, phase.min_duration_s + self.settle_s)
            if now - max(state.step_started, state.resumed_at) > allowed:
                return "ProgressDeadlineExceeded", (
                    f"canary step {state.step + 1} has not completed in {allowed:g} s"
                    f" ({state.passes} of {phase.checks} passing checks)"
                )
        return None

    def _canary(
        self, record: ExperimentRecord, state: RolloutState, status: Status, phase: Canary,
        missing: bool, now: float,
    ) -> dict[str, Any] | None:  # fmt: skip
        spec = record.spec
        if missing:
            state.passes = 0
            return None
        if now - state.step_started < self.settle_s:
            return None  # the readings still mostly cover the previous step
        state.passes += 1
        units = self._candidate_units(record, status) - state.step_units if phase.min_units else 0
        if not (
            state.passes >= phase.checks
            and now - state.step_started >= phase.min_duration_s
            and units >= phase.min_units
        ):
            return None
        what = next_step(spec, state, phase, now)
        if what is not None:
            state.step_units = self._candidate_units(record, status) if phase.min_units else 0.0
            return self._entry(record, state, "step", what)
        what = enter_phase(spec, state, state.phase + 1, now)
        action = "promote" if state.status is RolloutStatus.PROMOTED else "phase"
        return self._entry(record, state, action, what)

    def _ab(
        self, record: ExperimentRecord, state: RolloutState, status: Status,
        thresholds: list[Any], now: float,
    ) -> dict[str, Any] | None:  # fmt: skip
        from analysis import DecisionState, ExperimentStats, decide
        from analysis import Status as Verdict
        from experiments.reporting import analysed_spec, phase_report

        spec = record.spec
        report = phase_report(self.store, record, status.phase)
        previous = DecisionState.from_dict(state.decision) if state.decision else None
        stats = ExperimentStats.from_report(report["arms"])
        decision = decide(analysed_spec(record, status.phase, status), stats, thresholds, previous)
        state.decision = decision.state.to_dict()
        why = "; ".join(decision.reasons)
        if decision.status is Verdict.HARM:
            return self._entry(record, state, "rollback", roll_back(spec, state, why))
        if decision.status is Verdict.WINNER and decision.winner:
            if decision.winner == spec.control_variant.key:
                return self._entry(record, state, "finish",
                                   finish(spec, state, f"stable model wins: {why}"))  # fmt: skip
            if decision.winner != spec.candidate_variant.key:
                return None  # another arm is not what this rollout can promote
            state.winner = decision.winner
            what = enter_phase(spec, state, state.phase + 1, now)
            return self._entry(record, state, "promote", f"{decision.winner} wins: {why} → {what}")
        if decision.status is Verdict.NO_DIFFERENCE:
            what = finish(spec, state, f"no difference, stable kept: {why}")
            return self._entry(record, state, "finish", what)
        if decision.status is Verdict.INVALID:
            state.status, state.reason = RolloutStatus.PAUSED, why
            return self._entry(record, state, "pause", f"invalid: {why}")
        return None

    def _manual(self, spec: ExperimentSpec, state: RolloutState) -> str:
        request, state.request = state.request, None
        if request is Request.ROLLBACK and not state.status.final:
            return roll_back(spec, state, "manual rollback")
        if request is Request.PROMOTE and not state.status.final:
            return promote(spec, state, state.winner or spec.candidate_variant.key, "manual")
        if request is Request.PAUSE and state.status is RolloutStatus.RUNNING:
            state.status, state.reason = RolloutStatus.PAUSED, "paused by hand"
            return "paused by hand"
        if request is Request.RESUME and state.status is RolloutStatus.PAUSED:
            state.status, state.passes, state.reason = RolloutStatus.RUNNING, 0, ""
            state.step_started = state.data_at = self.clock()
            return "resumed by hand"
        return f"{request} ignored: the rollout is {state.status.value}"

    def _reflect(
        self, record: ExperimentRecord, state: RolloutState, status: Status, now: float
    ) -> Status:
        """The status as the rollout state makes it: weights, position, conclusion."""
        weights = {k: float(v) for k, v in state.weights.items()}
        status = replace(status, rollout=state.to_dict(), weights=weights)
        outcome = state.status.outcome
        if outcome is not None:
            if status.state is not State.CONCLUDED:
                status = end_phase(replace(status, state=State.CONCLUDED, outcome=outcome), now)
            done = status.outcome.value if status.outcome else outcome.value
            return status.with_condition("Progressing", False, "Concluded",
                                         f"{done}: {state.reason}", now)  # fmt: skip
        if state.status is RolloutStatus.PAUSED:
            return status.with_condition("Progressing", False, "Paused", state.reason, now)
        if status.state is State.PAUSED:
            return status.with_condition("Progressing", False, "ExperimentPaused", "", now)
        return status

    def _apply(self, record: ExperimentRecord, target: Resolved, state: RolloutState) -> None:
        """Make the target route as the stored state says; note when it is confirmed."""
        if not self._lease(record.uid):
            return  # another controller took over since this tick read the state
        plan = _plan(record.spec, state)
        try:
            self.routers.router(target).set_routes(plan)
        except AbmeshError as exc:
            self.telemetry.router_error(target.router)
            log.warning("routes of %s not applied: %s", record.name, exc)
            now = self.clock()
            self._note(record, record.status.with_condition(
                "RouteTargetReady", False, "RouterError", str(exc), now))  # fmt: skip
            return
        digest = _route_hash(record, target, state)
        ready = record.status.condition("RouteTargetReady")
        if (record.status.routes or {}).get("hash") != digest or ready is None or (
            ready.status != "True"
        ):
            now = self.clock()
            routes = {"hash": digest, "applied_at": now, "target": target.where}
            status = record.status.with_condition("RouteTargetReady", True, "Applied",
                                                  target.where, now)  # fmt: skip
            self._note(record, replace(status, routes=routes))

    def _note(self, record: ExperimentRecord, status: Status) -> None:
        """Record an observation (a condition, confirmed routes); a conflict drops it: the
        next tick observes again."""
        if status == record.status:
            return
        with contextlib.suppress(ConflictError, NotFoundError):
            self.store.commit_status(record.name, status, expected_version=record.status.version)

    # helpers

    def _labels(self, record: ExperimentRecord, spec: ExperimentSpec) -> dict[str, str]:
        target = self.routers.resolve(spec)
        clusters = dict(target.option("clusters")) if target.router == "envoy" else {}
        d = spec.candidate_variant.destination
        cluster = clusters.get(spec.candidate_variant.key) or d.subset or d.host
        return query_labels(d.host, d.subset, cluster)

    def _candidate_units(self, record: ExperimentRecord, status: Status) -> float:
        stats, _ = self.store.phase_stats(record.name, status.phase)
        return float(exposures_of(stats).get(record.spec.candidate_variant.key, 0))

    def _show(self, record: ExperimentRecord, state: RolloutState) -> None:
        phase = _phase(record.spec, state)
        kind = "concluded" if state.status.final else (phase.kind if phase else "promote")
        share = state.weights.get(record.spec.candidate_variant.key, 0)
        self.telemetry.experiment(record.name, state.phase, kind, float(share))
        self._shown = self._shown | {record.name}

    def _entry(
        self,
        record: ExperimentRecord,
        state: RolloutState,
        action: str,
        what: str,
        readings: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        return {
            "at": self.clock(),
            "by": self.owner,
            "experiment": record.name,
            "uid": record.uid,
            "generation": record.generation,
            "action": action,
            "what": what,
            "status": state.status.value,
            "phase": state.phase,
            "step": state.step,
            "weights": dict(state.weights),
            "guardrails": readings or [],
        }


def _state(status: Status) -> RolloutState | None:
    return RolloutState.from_dict(status.rollout) if status.rollout else None


def _phase(spec: ExperimentSpec, state: RolloutState) -> Any:
    assert spec.rollout is not None
    phases = spec.rollout.phases
    return phases[state.phase] if state.phase < len(phases) else None


def _kind(spec: ExperimentSpec, state: RolloutState) -> str | None:
    phase = _phase(spec, state)
    return None if phase is None else str(phase.kind)


def _plan(spec: ExperimentSpec, state: RolloutState) -> RoutePlan:
    return plan_routes(spec, state.weights, state.mode)


def _route_hash(record: ExperimentRecord, target: Resolved, state: RolloutState) -> str:
    text = repr((_plan(record.spec, state), target.router, target.where))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
