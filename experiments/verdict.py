"""The verdict an outside controller asks for (Argo Rollouts' `web` metric provider, Flagger's
webhooks): one look with `analysis.decide` at the experiment's current statistics and its
operational guardrails, turned into promote / rollback / pause / continue / no_difference.

The always-valid state of these looks is kept in the store under the experiment's uid and
phase, so asking every minute keeps the running minimum p and interval, and a new phase or a
re-created experiment starts afresh.  The sample is judged with the split its phase was
planned with, so a verdict asked after the routes moved (a promotion) is the phase's own.
Without a metrics provider the spec's operational guardrails read as no data: never a pass.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import httpx

from experiments.errors import ConflictError
from experiments.metrics_provider import MetricsProvider, query_labels
from experiments.reporting import analysed_spec, phase_report
from experiments.spec import ExperimentSpec
from experiments.store import Store

if TYPE_CHECKING:
    from analysis import Threshold

log = logging.getLogger("abmesh.verdict")

VERDICTS = {
    "winner": "promote",
    # Better, but a guardrail metric is not yet shown within its margin: keep testing.
    "winner_pending_guardrails": "continue",
    "harm": "rollback",
    "invalid": "pause",
    "no_difference": "no_difference",
    "continue": "continue",
}


def read_guardrails(
    spec: ExperimentSpec, provider: MetricsProvider | None, labels: dict[str, str]
) -> list[Threshold]:
    """The spec's operational guardrails for its candidate, read now.  A provider that is
    missing, unreachable or answers nonsense gives no data, which is never a pass."""
    from analysis import Threshold

    assert spec.rollout is not None
    candidate = spec.candidate_variant.key
    out = []
    for g in spec.rollout.guardrails:
        value = None
        if provider is not None:
            try:
                value = provider.value(g.query, **labels)
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                log.warning("metrics provider, %s: %s", g.name, exc)
        out.append(Threshold(g.name, value, g.limit, candidate, g.bound.value))
    return out


def current_verdict(store: Store, name: str, provider: MetricsProvider | None) -> dict[str, Any]:
    from analysis import DecisionState, ExperimentStats, decide

    record = store.get_experiment(name)
    spec = record.spec
    thresholds = []
    if spec.rollout is not None:
        d = spec.candidate_variant.destination
        # Envoy clusters are taken to be named after the subset (or the host).
        thresholds = read_guardrails(
            spec, provider, query_labels(d.host, d.subset, d.subset or d.host)
        )
    # A new phase is a new sample: a new state; a new experiment of the same name, a new uid.
    key = f"{record.uid}#verdict#{record.phase}"
    doc, version = store.get_control(key)
    previous = DecisionState.from_dict(doc) if doc else None
    stats = ExperimentStats.from_report(phase_report(store, record)["arms"])
    decision = decide(analysed_spec(record), stats, thresholds, previous)
    # If another replica answered the same look at the same moment, its state is as good.
    with contextlib.suppress(ConflictError):
        store.put_control(key, decision.state.to_dict(), version)
    verdict = VERDICTS[decision.status.value]
    if verdict == "promote" and decision.winner == spec.control_variant.key:
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
        # ok: every guardrail read and passing; failed: one read and over its limit (no data
        # is neither, so a metric-less start neither advances nor aborts a rollout).
        "guardrails_ok": all(g.status == "pass" for g in decision.guardrails),
        "guardrails_failed": any(g.status == "fail" for g in decision.guardrails),
        "guardrails": [
            {"name": g.name, "value": g.value, "limit": g.limit, "status": g.status}
            for g in decision.guardrails
        ],
        "reasons": list(decision.reasons),
        "srm_pvalue": decision.srm_pvalue,
    }
