"""The report's shadow section as data: the comparison the controller acted on (or, before its
first look, the one the sums give now), each measure at every look, and the two arms' score
ECDFs over the same requests.  None when the experiment has no shadow phase."""

from __future__ import annotations

import itertools
import math
from typing import Any

from experiments.shadow_sums import ShadowSums
from experiments.spec import ExperimentSpec
from experiments.store import Store


def shadow_section(
    store: Store, spec: ExperimentSpec, phase: str, rollout: dict[str, Any] | None
) -> dict[str, Any] | None:
    from analysis.shadow import judge_shadow

    shadow = spec.rollout.shadow if spec.rollout else None
    if shadow is None:
        return None
    sums = store.shadow_sums(spec.name, phase, score_range=shadow.score_range,
                             window_s=shadow.pair_window_s)  # fmt: skip
    state = rollout or {}
    verdict = state.get("shadow") or judge_shadow(sums, shadow).to_dict()
    return {
        "settings": {"percent": shadow.percent, "methods": list(shadow.methods),
                     "tolerance": shadow.tolerance.model_dump(), "alpha": shadow.alpha},
        "verdict": verdict,
        "looks": (state.get("shadow_looks") or {}).get("items", []),
        "pairs": sums.pairs, "pending": sums.pending, "unpaired": dict(sums.unpaired),
        "ecdf": ecdf(sums),
    }  # fmt: skip


def ecdf(sums: ShadowSums) -> dict[str, list[float]]:
    """Each arm's empirical CDF at the upper edges of the bins either arm has scores in (the
    page stays small however fine the bins)."""
    hist = {arm: sums.hist.get(arm) for arm in ("stable", "candidate")}
    counts = [h for h in hist.values() if h is not None]
    if not counts:
        return {"x": [], "stable": [], "candidate": []}
    used = [i for i in range(len(counts[0])) if any(h[i] for h in counts)]
    edges = sums.edges()
    out: dict[str, list[float]] = {"x": [edges[i] if math.isfinite(edges[i]) else sums.high
                                         for i in used]}  # fmt: skip
    for arm, h in hist.items():
        cumulative = list(itertools.accumulate(h or [0] * len(edges)))
        total = cumulative[-1]
        out[arm] = [cumulative[i] / total if total else 0.0 for i in used]
    return out
