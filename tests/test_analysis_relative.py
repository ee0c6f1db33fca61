"""Relative mode keeps each side's error within α/2: decide tests a lift as the log ratio, whose
variance does not depend on which arm is ahead.  A seeded A/A simulation under continuous
monitoring (skewed lognormal data, 20 looks) counts false winners and false harms separately
through decide itself; the delta-method lift it replaced is run on the same data as the
reference that shows the simulation can see the asymmetry."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from analysis import ArmStats, DecisionState, ExperimentStats, Status, decide_many
from analysis.mixture import effect_and_variance, mixture, rho2_for
from tests.test_analysis_decide import make_spec

RUNS, LOOKS, STEP, ALPHA = 2000, 20, 100, 0.05


def first_crossings(win: np.ndarray, harm: np.ndarray) -> tuple[float, float]:
    """Rates of runs whose first verdict is a winner, and a harm."""
    never = win.shape[1]
    w = np.where(win.any(axis=1), win.argmax(axis=1), never)
    h = np.where(harm.any(axis=1), harm.argmax(axis=1), never)
    return float(np.mean(w < h)), float(np.mean(h < w))


def test_false_winner_and_false_harm_are_each_within_half_alpha() -> None:
    rng = np.random.default_rng(5)
    y = rng.lognormal(0, 1, (2, RUNS, LOOKS * STEP))
    s1 = np.cumsum(y, axis=2)[:, :, STEP - 1 :: STEP]
    s2 = np.cumsum(y * y, axis=2)[:, :, STEP - 1 :: STEP]
    spec = make_spec(
        {"relative": True, "max_units_per_arm": LOOKS * STEP},
        primary={"name": "y", "kind": "mean"},
    )
    states: list[DecisionState | None] = [None] * RUNS
    win, harm = np.zeros((RUNS, LOOKS), bool), np.zeros((RUNS, LOOKS), bool)
    for k in range(LOOKS):
        n = (k + 1) * STEP
        requests = []
        for r in range(RUNS):
            arms = {
                "control": ArmStats(n, s1[0, r, k], s2[0, r, k]),
                "treatment": ArmStats(n, s1[1, r, k], s2[1, r, k]),
            }
            data = ExperimentStats({"control": n, "treatment": n}, {"y": arms})
            requests.append((spec, data, (), states[r]))
        for r, d in enumerate(decide_many(requests)):
            states[r] = d.state
            win[r, k], harm[r, k] = d.status is Status.WINNER, d.status is Status.HARM
    false_winner, false_harm = first_crossings(win, harm)
    se = math.sqrt(ALPHA / 2 * (1 - ALPHA / 2) / RUNS)
    assert false_winner <= ALPHA / 2 + 3 * se
    assert false_harm <= ALPHA / 2 + 3 * se
    # Symmetric: given a false verdict, each side is a fair coin (binomial test, scipy).
    w, h = round(false_winner * RUNS), round(false_harm * RUNS)
    assert w + h > 10
    assert stats.binomtest(w, w + h, 0.5).pvalue > 0.01

    # Reference: the delta-method lift on the same data is lopsided, and the same check
    # rejects it: the simulation can see the defect it guards against.
    n = STEP * np.arange(1, LOOKS + 1)
    ma, mb = s1[0] / n, s1[1] / n
    va, vb = (s2[0] - s1[0] ** 2 / n) / (n - 1), (s2[1] - s1[1] ** 2 / n) / (n - 1)
    est, v = effect_and_variance(ma, va, n, mb, vb, n, relative=True)
    _, radius = mixture(est, v, rho2_for(2 * LOOKS * STEP, ALPHA) * 2 * n * v, 0.0, ALPHA)
    low = np.maximum.accumulate(est - radius, axis=1)
    high = np.minimum.accumulate(est + radius, axis=1)
    old_winner, old_harm = first_crossings(low > 0, high < 0)
    w, h = round(old_winner * RUNS), round(old_harm * RUNS)
    assert h > 2 * w
    assert stats.binomtest(w, w + h, 0.5).pvalue < 0.01
