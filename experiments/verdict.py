"""The verdict an outside controller asks for (Argo Rollouts' `web` metric provider, Flagger's
webhooks): one look with `analysis.decide` at the experiment's current statistics and its
operational guardrails, turned into promote / rollback / pause / continue / no_difference.

The always-valid state of these looks is kept in the store under the experiment's uid and
phase, so asking every minute keeps the running minimum p and interval, and a new phase or a
re-created experiment starts afresh.  Each look is recorded in the experiment's history
(experiments.looks_log, by "verdict").  The sample is judged with the split its phase was
planned with, so a verdict asked after the routes moved (a promotion) is the phase's own.
Guardrails are read through controlplane.metrics (this module is the one place experiments/
depends on the control plane: the providers are the controller's, and the verdict reads them
the same way).  An experiment without operational guardrails (no `rollout:` section, or an empty
list) is never reported healthy: `guardrails_configured` is false and `guardrails_ok` too,
unless the service has default guardrails (a Prometheus URL: the preset p99 and error ratio).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from controlplane.metrics import MetricsProvider, Reading, Tests, read_guardrails, variables_for
from experiments.errors import ConflictError
from experiments.looks_log import look_of, record_look
from experiments.report_segments import segment_harm
from experiments.reporting import analysed_spec, phase_report
from experiments.spec import ExperimentSpec
from experiments.spec_rollout import OperationalGuardrail, default_guardrails
from experiments.store import Store

VERDICTS = {
    "winner": "promote",
    # Better, but a guardrail metric is not yet shown within its margin (or tolerance): keep
    # testing.
    "winner_pending_guardrails": "continue",
    "harm": "rollback",
    "invalid": "pause",
    "no_difference": "no_difference",
    "continue": "continue",
}


def guardrails_of(
    spec: ExperimentSpec, service_defaults: bool
) -> tuple[tuple[OperationalGuardrail, ...], str | None]:
    """The guardrails to judge and where they come from: the spec, the service's defaults, or
    (None) nowhere."""
    own = spec.rollout.guardrails if spec.rollout is not None else ()
    if own:
        return own, "spec"
    if service_defaults:
        return default_guardrails(), "service defaults"
    return (), None


def read_relative_too(
    store: Store, uid: str, phase: str, spec: ExperimentSpec,
    guardrails: tuple[OperationalGuardrail, ...], provider: MetricsProvider | None,
) -> list[Reading]:  # fmt: skip
    """The guardrails read now; the relative ones go on with their tests, kept in the store
    per uid and phase like the decision state, so polling keeps one sequential test."""
    key = f"{uid}#guardrail-tests#{phase}"
    saved, version = store.get_control(key)
    tests = Tests(variables_for(spec, variant=spec.control_variant.key), dict(saved or {}))
    readings = read_guardrails(guardrails, provider, variables_for(spec), tests)
    if tests.saved != (saved or {}):
        with contextlib.suppress(ConflictError):  # another replica's reading is as good
            store.put_control(key, tests.saved, version)
    return readings


def current_verdict(
    store: Store, name: str, provider: MetricsProvider | None, *, service_defaults: bool = False
) -> dict[str, Any]:
    from analysis import DecisionState, ExperimentStats, decide

    record = store.get_experiment(name)
    spec = record.spec
    guardrails, source = guardrails_of(spec, service_defaults)
    readings = read_relative_too(store, record.uid, record.phase, spec, guardrails, provider)
    candidate = spec.candidate_variant.key
    thresholds = [r.threshold(candidate) for r in readings]
    # A new phase is a new sample: a new state; a new experiment of the same name, a new uid.
    key = f"{record.uid}#verdict#{record.phase}"
    doc, version = store.get_control(key)
    previous = DecisionState.from_dict(doc) if doc else None
    report = phase_report(store, record)
    arms = report["arms"]
    stats = ExperimentStats.from_report(arms)
    decision = decide(analysed_spec(record), stats, thresholds, previous)
    # If another replica answered the same look at the same moment, its state is as good.
    with contextlib.suppress(ConflictError):
        store.put_control(key, decision.state.to_dict(), version)
    look = look_of(decision, arms, record=record, phase=record.phase, at=time.time(),
                   by="verdict", guardrails=[r.to_dict() for r in readings],
                   sources=report.get("sources"))  # fmt: skip
    record_look(store, record.uid, look)
    verdict = VERDICTS[decision.status.value]
    reasons = list(decision.reasons)
    confined = segment_harm(record, report) if verdict != "rollback" else None
    if confined is not None:
        verdict, reasons = "rollback", [confined, *reasons]
    elif verdict == "promote" and decision.winner == spec.control_variant.key:
        verdict = "rollback"  # the stable model is the better one
    elif verdict == "promote" and decision.winner != spec.candidate_variant.key:
        verdict = "continue"  # a third arm won: not something this rollout can promote
    return {
        "experiment": name,
        "phase": record.phase,
        "state": record.state.value,
        "outcome": record.status.outcome.value if record.status.outcome else None,
        "decision": verdict,
        "status": decision.status.value,
        "winner": decision.winner,
        # ok: guardrails configured, each read and passing; failed: one read and over its limit
        # (no data is neither, so a metric-less start neither advances nor aborts a rollout).
        "guardrails_configured": source is not None,
        "guardrails_source": source or "not configured",
        "guardrails_ok": source is not None and all(r.status == "pass" for r in readings),
        "guardrails_failed": any(r.status == "fail" for r in readings),
        "guardrails": [r.to_dict() for r in readings],
        "reasons": reasons,
        "srm_pvalue": decision.srm_pvalue,
    }
