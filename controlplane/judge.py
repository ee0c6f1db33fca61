"""What one tick decides for one experiment: the next rollout state, its status, the audit
entries and the looks taken, from the spec, the stored status, the guardrails and the
statistics (gating in an A/B phase; observed, not gated, in a canary: experiments.looks_log).
Nothing here writes: the controller (controlplane.controller) persists what this decides in
one compare-and-set, then records the looks and applies the routes.

A spec change during a rollout (a new generation): changed arms (variants, destinations,
control) or metrics start a new analysis phase and restart the rollout at its first step; a
changed `rollout.phases` takes effect at the next step (a phase list that no longer has the
current phase restarts); any other change applies at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from controlplane.guardrail_policy import apply_policy
from controlplane.metrics import MetricsProvider, Tests, read_guardrails, variables_for
from controlplane.rollout import (
    Request,
    RolloutState,
    RolloutStatus,
    enter_phase,
    finish,
    next_step,
    phase_of,
    promote,
    roll_back,
)
from controlplane.shadow_gate import drift_check, shadow_move
from controlplane.targets import Routers
from experiments.errors import NotFoundError, SourceError
from experiments.folding import exposures_of
from experiments.looks_log import look_of, observe
from experiments.spec import ExperimentSpec
from experiments.spec_rollout import ABTest, Canary, OnNoData, Shadow
from experiments.status import State, Status, end_phase, new_phase_name
from experiments.status import enter_phase as enter_analysis_phase
from experiments.store import ExperimentRecord, Store

log = logging.getLogger("abmesh.controller")

Audit = list[dict[str, Any]]
Looks = list[dict[str, Any]]


@dataclass
class Judge:
    store: Store
    routers: Routers
    provider: MetricsProvider
    owner: str
    # A check right after a step mostly sees the previous step's traffic (the queries' rate
    # window): checks count only once the step is this old.
    settle_s: float
    clock: Callable[[], float]

    def decide(
        self, record: ExperimentRecord, now: float
    ) -> tuple[RolloutState, Status, Audit, Looks] | None:
        """The next rollout state, status, audit entries and looks (experiments.looks_log);
        None: nothing to do (a rollout that has not started and is not to start)."""
        status, audit, looks = record.status, Audit(), Looks()
        state = state_of(status)
        if state is None:
            if status.state is not State.RUNNING:
                return None
            state = RolloutState()
            status = self.start(record, state, status, now, audit, "start")
        else:
            if status.observed_generation != record.generation:
                state, status = self.observe(record, state, status, now, audit)
            if state.request is not None:
                request = state.request.value
                audit.append(self.entry(record, state, request, self.manual(record.spec, state)))
            elif status.state is State.CONCLUDED and not state.status.final:
                what = roll_back(record.spec, state, "the experiment was stopped")
                audit.append(self.entry(record, state, "rollback", what))
            elif status.state is State.RUNNING and state.status is RolloutStatus.RUNNING:
                status = self.advance(record, state, status, now, audit, looks)
        return state, self.reflect(state, status, now), audit, looks

    def start(
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
        first = phase_of(record.spec, state)
        if isinstance(first, ABTest) or action == "restart":
            base = first.kind if isinstance(first, ABTest | Shadow) else "canary"
            planned = dict(state.weights) if isinstance(first, ABTest) else None
            status = enter_analysis_phase(status, new_phase_name(status, base), now, planned)
        audit.append(self.entry(record, state, action, f"{why}{what}"))
        return status.with_condition("Progressing", True, "Started", f"{why}{what}", now)

    def observe(
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
            return state, self.start(record, state, status, now, audit, "restart", why)
        if old.rollout.phases != phases:
            what = f"generation {generation}: the new plan takes effect at the next step"
            audit.append(self.entry(record, state, "replan", what))
        return state, status

    def advance(
        self, record: ExperimentRecord, state: RolloutState, status: Status, now: float,
        audit: Audit, looks: Looks,
    ) -> Status:  # fmt: skip
        spec = record.spec
        assert spec.rollout is not None
        phase = phase_of(spec, state)
        if phase is None or not isinstance(phase, Shadow | Canary | ABTest):
            audit.append(self.entry(record, state, "promote",
                                     enter_phase(spec, state, state.phase, now)))  # fmt: skip
            return status
        progressing = status.condition("Progressing")
        if progressing is not None and progressing.reason in ("ExperimentPaused", "Paused"):
            # Back from a pause: the time it was held is not a missed deadline.
            state.data_at = state.resumed_at = now
        guardrails = spec.rollout.guardrails
        variables, tests = self._variables(spec, state)
        readings = read_guardrails(guardrails, self.provider, variables, tests)
        state.guardrail_tests = tests.saved
        judged, state.guardrail_counts = apply_policy(guardrails, readings,
                                                      state.guardrail_counts)  # fmt: skip
        entries = [r.to_dict() for r in readings]
        failed = [j.why for j in judged if j.failed]
        if spec.rollout.score_drift is not None and isinstance(phase, Canary | ABTest):
            reading, harm = drift_check(self.store, record, status.phase,
                                        spec.rollout.score_drift, now)  # fmt: skip
            entries.append(reading)
            failed += [harm] if harm else []
        # Not a pass yet: a failing reading the policy does not count yet, or no evidence
        # (no data, not enough data, a provider error).
        failing = [j.why for j in judged if j.reading.status == "fail" and not j.failed]
        missing = [j.why for j in judged if j.reading.status not in ("pass", "fail")]
        healthy = False if failed else (None if failing or missing else True)
        reason = "GuardrailFailed" if failed else "GuardrailFailing" if failing else (
            "NoData" if missing else "WithinLimits")  # fmt: skip
        message = "; ".join(failed or failing or missing)
        status = status.with_condition("GuardrailsHealthy", healthy, reason, message, now)
        if isinstance(phase, Canary):  # before a rollback too: the look that saw the harm
            looks.extend(self._observe(record, state, status.phase, entries, now))
        if failed:
            what = roll_back(spec, state, "; ".join(failed))
            audit.append(self.entry(record, state, "rollback", what, entries))
            return status
        if not missing:
            state.data_at = now
            if progressing is not None and progressing.reason == "NoData":
                state.resumed_at = now  # the step's evidence starts again
        late = self._late(spec, state, phase, now)
        if late is not None:
            kind, why = late
            if spec.rollout.on_no_data is OnNoData.ROLLBACK:
                audit.append(self.entry(record, state, "rollback",
                                         roll_back(spec, state, why), entries))  # fmt: skip
                return status
            old = status.condition("Progressing")
            if old is None or old.reason != kind:
                audit.append(self.entry(record, state, "hold", f"held: {why}", entries))
            state.passes = 0
            return status.with_condition("Progressing", False, kind, why, now)
        status = status.with_condition("Progressing", True, "Progressing", "", now)
        if isinstance(phase, Canary):
            entry = self._canary(record, state, status, phase, bool(failing or missing), now)
        elif isinstance(phase, Shadow):
            move = shadow_move(self.store, record, state, status.phase, phase, now,
                               guardrails_pass=not (failing or missing))  # fmt: skip
            entry = None if move is None else self.entry(record, state, *move)
        else:
            candidate = spec.candidate_variant.key
            thresholds = [j.reading.threshold(candidate, counted=j.failed) for j in judged]
            try:
                entry = self._ab(record, state, status, thresholds, now,
                                 looks=looks, readings=entries)  # fmt: skip
            except SourceError as exc:  # held, not failed: the warehouse may come back
                if progressing is None or progressing.reason != "MetricsUnreadable":
                    audit.append(self.entry(record, state, "hold", f"held: {exc}", entries))
                return status.with_condition("Progressing", False, "MetricsUnreadable",
                                             str(exc), now)  # fmt: skip
        if entry is not None:
            audit.append({**entry, "guardrails": entries})
            if isinstance(phase_of(spec, state), ABTest) and not isinstance(phase, ABTest):
                planned = dict(state.weights)
                status = enter_analysis_phase(status, new_phase_name(status, "ab"), now, planned)
        return status

    def _late(
        self, spec: ExperimentSpec, state: RolloutState, phase: Shadow | Canary | ABTest,
        now: float,
    ) -> tuple[str, str] | None:  # fmt: skip
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
            return self.entry(record, state, "step", what)
        what = enter_phase(spec, state, state.phase + 1, now)
        action = "promote" if state.status is RolloutStatus.PROMOTED else "phase"
        return self.entry(record, state, action, what)

    def _observe(
        self, record: ExperimentRecord, state: RolloutState, phase: str,
        readings: list[dict[str, Any]], now: float,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """A canary's look at the statistics: the effect as the data scientist wants it during
        the canary, kept with its running state in `state.observed`; nothing gates on it, so
        a SQL source that fails skips it (a guardrail's rollback does not wait for it)."""
        from analysis import DecisionState
        from experiments.reporting import phase_report

        try:
            report = phase_report(self.store, record, phase)
        except SourceError as exc:
            log.warning("canary look at %s skipped: %s", record.name, exc)
            return []
        arms = report["arms"]
        previous = DecisionState.from_dict(state.observed) if state.observed else None
        decision = observe(record, arms, previous)
        state.observed = decision.state.to_dict()
        return [look_of(decision, arms, record=record, phase=phase, at=now, by=self.owner,
                        observational=True, guardrails=readings,
                        sources=report.get("sources"))]  # fmt: skip

    def _ab(
        self, record: ExperimentRecord, state: RolloutState, status: Status,
        thresholds: list[Any], now: float, *, looks: Looks, readings: list[dict[str, Any]],
    ) -> dict[str, Any] | None:  # fmt: skip
        from analysis import DecisionState, ExperimentStats, decide
        from analysis import Status as Verdict
        from experiments.report_segments import segment_harm
        from experiments.reporting import analysed_spec, phase_report

        spec = record.spec
        report = phase_report(self.store, record, status.phase)
        previous = DecisionState.from_dict(state.decision) if state.decision else None
        stats = ExperimentStats.from_report(report["arms"])
        decision = decide(analysed_spec(record, status.phase, status), stats, thresholds, previous)
        state.decision = decision.state.to_dict()
        looks.append(look_of(decision, report["arms"], record=record, phase=status.phase,
                             at=now, by=self.owner, guardrails=readings,
                             sources=report.get("sources")))  # fmt: skip
        why = "; ".join(decision.reasons)
        if decision.status is Verdict.HARM:
            return self.entry(record, state, "rollback", roll_back(spec, state, why))
        confined = segment_harm(record, report)
        if confined is not None:
            return self.entry(record, state, "rollback", roll_back(spec, state, confined))
        if decision.status is Verdict.WINNER and decision.winner:
            if decision.winner == spec.control_variant.key:
                return self.entry(record, state, "finish",
                                   finish(spec, state, f"stable model wins: {why}"))  # fmt: skip
            if decision.winner != spec.candidate_variant.key:
                return None  # another arm is not what this rollout can promote
            state.winner = decision.winner
            what = enter_phase(spec, state, state.phase + 1, now)
            return self.entry(record, state, "promote", f"{decision.winner} wins: {why} → {what}")
        if decision.status is Verdict.WINNER_PENDING_GUARDRAILS:
            return None  # better, but a guardrail is unproven: neither promote nor finish
        if decision.status is Verdict.NO_DIFFERENCE:
            what = finish(spec, state, f"no difference, stable kept: {why}")
            return self.entry(record, state, "finish", what)
        if decision.status is Verdict.INVALID:
            state.status, state.reason = RolloutStatus.PAUSED, why
            return self.entry(record, state, "pause", f"invalid: {why}")
        return None

    def manual(self, spec: ExperimentSpec, state: RolloutState) -> str:
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

    def reflect(self, state: RolloutState, status: Status, now: float) -> Status:
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

    def _variables(self, spec: ExperimentSpec, state: RolloutState) -> tuple[dict[str, str], Tests]:
        """The candidate's placeholders, and the stable arm's with the relative tests so far."""
        target = self.routers.resolve(spec)
        clusters = dict(target.option("clusters")) if target.router == "envoy" else {}
        namespace = str(dict(target.options).get("namespace") or "")
        arms = {v: variables_for(spec, clusters.get(v), namespace, v)
                for v in (spec.candidate_variant.key, spec.control_variant.key)}  # fmt: skip
        stable = Tests(arms[spec.control_variant.key], dict(state.guardrail_tests))
        return arms[spec.candidate_variant.key], stable

    def _candidate_units(self, record: ExperimentRecord, status: Status) -> float:
        """The candidate's exposed units in the phase, wherever they are counted (a SQL
        source that fails counts none: the step waits)."""
        candidate = record.spec.candidate_variant.key
        if record.spec.source is not None:
            from experiments.reporting import phase_report

            try:
                arms = phase_report(self.store, record, status.phase)["arms"]
            except SourceError as exc:
                log.warning("units of %s unknown: %s", record.name, exc)
                return 0.0
            return float(arms.get(candidate, {}).get("exposures", 0))
        stats, _ = self.store.phase_stats(record.name, status.phase)
        return float(exposures_of(stats).get(candidate, 0))

    def entry(
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


def state_of(status: Status) -> RolloutState | None:
    return RolloutState.from_dict(status.rollout) if status.rollout else None


def _kind(spec: ExperimentSpec, state: RolloutState) -> str | None:
    phase = phase_of(spec, state)
    return None if phase is None else str(phase.kind)
