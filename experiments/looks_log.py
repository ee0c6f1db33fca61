"""Every look a decision takes, kept as the experiment's history: what the report draws over
time, one point per look, whatever the rollout's length.

A look is recorded by whoever takes it (the rollout controller, `abmesh decide`, the verdict
endpoints), with its inputs and result: when, who, the analysis phase, the look's number (the
decision state's counter), the per-arm sufficient statistics as `phase_report` gives them, and
the decision (status, winner, reasons, SRM p) with, per comparison, the effect (the lift, where
`relative`), its always-valid interval and p-value (for a group-sequential design: z, the
information fraction and the boundary).  A canary's looks are observational: the controller
does not gate on them and the split moves under them, so they are compared at a fixed nominal
split without an SRM judgement (`observe`), and marked so.

Bounded, because a decision may be asked for every few seconds for months:
- a look that saw the same data as the phase's last recorded one (the same exposures and
  metric counts per arm) is not recorded again: a verdict polled 500 times on a quiet
  experiment is one entry;
- past `EVERY` looks in a phase only every 2nd is kept, past 2·`EVERY` every 4th, and so on
  (`keeps`), so a phase holds about EVERY·(1 + ½ log₂(n / EVERY)) looks after n, and never
  more than `CAP`; a look that acts (winner, harm, no difference, invalid) is always kept;
- the store checks and appends in one atomic step, so two writers cannot interleave.
Recording is a side effect of deciding, never part of it: a store that fails here is logged
and the decision stands.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from experiments.errors import AbmeshError
from experiments.store.protocol import ExperimentRecord, LookStore

if TYPE_CHECKING:
    from analysis import Decision, DecisionState

log = logging.getLogger("abmesh.looks")

EVERY = 100  # every look of a phase is kept up to this many
CAP = 1000  # looks a phase holds at most, whoever writes them
# Statuses that end or hold a test: the look that reached one is kept whatever its number.
ACTING = frozenset({"winner", "harm", "no_difference", "invalid"})


def keeps(number: int, *, every: int = EVERY) -> bool:
    """Whether look `number` (1-based) is kept by the thinning: all up to `every`, then every
    2nd up to 2·`every`, every 4th up to 4·`every`, …"""
    stride = 1
    while every * stride < number:
        stride *= 2
    return number % stride == 0


def fingerprint(arms: Mapping[str, Any]) -> str:
    """What data a look saw: per arm, its exposures and each metric's unit count and sum."""
    seen = sorted(
        (variant, arm["exposures"], sorted((m, v.get("n"), v.get("sum", v.get("sum_num_den")))
                                           for m, v in arm["metrics"].items()))
        for variant, arm in arms.items()
    )  # fmt: skip
    return hashlib.sha256(json.dumps(seen).encode()).hexdigest()[:24]


def observe(
    record: ExperimentRecord, arms: Mapping[str, Any], state: DecisionState | None
) -> Decision:
    """An observational look at the rollout's two arms: compared as `decide` compares them, at
    a fixed nominal split (the running state's design stays the same through the canary's
    steps) and without an SRM judgement (the split moved while the sample was collected)."""
    from analysis import ExperimentStats, decide

    spec = record.spec
    nominal = spec.with_weights({spec.control_variant.key: 50, spec.candidate_variant.key: 50})
    return decide(nominal, ExperimentStats.from_report(dict(arms)), (), state, srm=False)


def look_of(
    decision: Decision,
    arms: Mapping[str, Any],
    *,
    record: ExperimentRecord,
    phase: str,
    at: float,
    by: str,
    observational: bool = False,
    guardrails: Sequence[Mapping[str, Any]] | None = None,
    sources: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The look as it is stored (plain JSON); `guardrails`: the operational readings as the
    caller read them (default: the decision's own checks); `sources`: the SQL queries that
    read the statistics (the phase report's `sources`: engine, query text, duration)."""
    cfg = record.spec.analysis
    cap = cfg.max_units_per_arm if cfg.method.value == "group-sequential" else None
    comparisons = []
    for c in decision.comparisons:
        information = None
        if cap and c.role == "primary":
            information = min(c.n_control, c.n_treatment) / cap
        comparisons.append({
            "metric": c.metric, "role": c.role, "variant": c.variant, "verdict": c.verdict,
            "effect": c.estimate, "low": c.ci_low, "high": c.ci_high, "pvalue": c.pvalue,
            "z": c.statistic if cap else None, "information": information,
            "boundary": c.boundary, "units": [c.n_control, c.n_treatment],
            "relative": c.relative,
        })  # fmt: skip
    look = {
        "at": at,
        "by": by,
        "phase": phase,
        "look": decision.state.looks,
        "generation": record.generation,
        "observational": observational,
        "method": cfg.method.value,
        "arms": dict(arms),
        "status": decision.status.value,
        "winner": decision.winner,
        "reasons": list(decision.reasons),
        "srm_pvalue": decision.srm_pvalue,
        "comparisons": comparisons,
        "guardrails": [dict(g) for g in guardrails]
        if guardrails is not None
        else [asdict(g) for g in decision.guardrails],
    }
    if sources:
        look["sources"] = [dict(s) for s in sources]
    return look


def record_look(store: LookStore, uid: str, look: dict[str, Any]) -> bool:
    """Keep `look` under the experiment's uid if the thinning keeps it and it saw new data;
    True if it was stored.  Never raises: a failed write is logged and the decision stands."""
    if look["status"] not in ACTING and not keeps(int(look["look"])):
        return False
    try:
        return store.append_look(uid, look, fingerprint=fingerprint(look["arms"]), cap=CAP)
    except (AbmeshError, ValueError) as exc:  # the store is down, or the look is not JSON
        log.warning(
            "look %s of %s (phase %s, by %s) not recorded: %s",
            look["look"], uid, look["phase"], look["by"], exc,
        )  # fmt: skip
        return False
