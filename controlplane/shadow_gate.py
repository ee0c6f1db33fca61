"""The shadow phase's move at a tick: compare the predictions paired so far (analysis.shadow)
and pass to the next phase, stop the rollout (the candidate never served anyone), hold on an
invalid comparison, or at the phase's deadline do what it says."""

from __future__ import annotations

from typing import Any

from controlplane.rollout import RolloutState, RolloutStatus, enter_phase, roll_back
from experiments.predictions import shadow_of
from experiments.spec_rollout import OnTimeout, ScoreDrift, Shadow
from experiments.store import ExperimentRecord, Store

LOOKS = 200  # looks kept in the status for the report: a long phase keeps every 2nd, 4th, …


def shadow_move(
    store: Store,
    record: ExperimentRecord,
    state: RolloutState,
    analysis_phase: str,
    phase: Shadow,
    now: float,
    *,
    guardrails_pass: bool,
) -> tuple[str, str] | None:
    """(audit action, what happened), or None: the phase goes on.  Updates `state`.  The
    predictions' pass waits for the guardrails (the mirrored requests' latency and errors in
    the mesh's metrics) to pass too."""
    from analysis.shadow import judge_shadow  # scipy: loaded when a shadow phase runs

    spec = record.spec
    sums = store.shadow_sums(record.name, analysis_phase, score_range=phase.score_range,
                             window_s=phase.pair_window_s, now=now)  # fmt: skip
    verdict = judge_shadow(sums, phase)
    state.shadow = verdict.to_dict()
    state.shadow_looks = record_look(state.shadow_looks, now, state.shadow)
    why = "; ".join(verdict.reasons)
    if verdict.status == "fail":
        return "rollback", roll_back(spec, state, f"shadow: {why}")
    if verdict.status == "pass" and guardrails_pass:
        what = enter_phase(spec, state, state.phase + 1, now)
        action = "promote" if state.status is RolloutStatus.PROMOTED else "phase"
        return action, f"shadow passed: {why} → {what}"
    if verdict.status == "invalid":
        state.status, state.reason = RolloutStatus.PAUSED, f"shadow invalid: {why}"
        return "pause", state.reason
    if now - state.step_started < phase.max_duration_s:
        return None
    ended = f"shadow phase ended after {phase.max_duration_s:g} s undecided ({why})"
    if phase.on_timeout is OnTimeout.ROLLBACK:
        return "rollback", roll_back(spec, state, ended)
    return "phase", f"{ended}: proceeding → {enter_phase(spec, state, state.phase + 1, now)}"


def record_look(looks: dict[str, Any], now: float, verdict: dict[str, Any]) -> dict[str, Any]:
    """The history with this look: each measure's estimate, interval and tolerance at that
    many pairs.  One look in `stride` is kept; past LOOKS, every other is dropped and the
    stride doubles, so the history stays small and evenly spread however long the phase."""
    items, stride = list(looks.get("items", [])), int(looks.get("stride", 1))
    tick = int(looks.get("tick", 0))
    if tick % stride == 0:
        items.append({
            "at": now,
            "pairs": verdict["pairs"],
            "measures": {name: [m["estimate"], m["low"], m["high"], m["tolerance"]]
                         for name, m in verdict["measures"].items()},
        })  # fmt: skip
        if len(items) > LOOKS:
            items, stride = items[::2], 2 * stride
    return {"items": items, "stride": stride, "tick": tick + 1}


def drift_check(
    store: Store, record: ExperimentRecord, analysis_phase: str, drift: ScoreDrift, now: float
) -> tuple[dict[str, Any], str | None]:
    """The score-drift guardrail read now: (its entry among the guardrail readings, the reason
    to roll back or None)."""
    from analysis.score_drift import score_drift
    shadow = shadow_of(record.spec)
    sums = store.shadow_sums(record.name, analysis_phase, score_range=shadow.score_range,
                             window_s=shadow.pair_window_s, now=now)  # fmt: skip
    m = score_drift(sums, drift.tolerance, drift.alpha, drift.min_predictions)
    status = {"violated": "fail", "within": "pass", "undecided": "pass"}.get(m.state,
                                                                             "not_enough_data")
    message = m.sentence() if m.estimate is not None else (
        f"{m.n} scored predictions in the smaller arm, {drift.min_predictions} needed")
    entry = {"name": "score_drift", "kind": "score_drift", "status": status,
             "value": m.estimate, "limit": drift.tolerance, "low": m.low, "high": m.high,
             "alpha": drift.alpha, "message": message}  # fmt: skip
    harm = f"guardrail score_drift: {m.sentence()} is shown over its tolerance"
    return entry, harm if m.state == "violated" else None
