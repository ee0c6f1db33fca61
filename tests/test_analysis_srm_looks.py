"""decide's SRM gate under continuous monitoring: the sequential test at every look plus
Pearson's χ² at the one look where the units reach the horizon's total.  A seeded simulation
(the smaller twin of benchmarks/srm_looks.py) checks its false `invalid` rate against
2 × srm_alpha and its power against a single χ²; decide itself is checked to follow the same
rule on simulated count paths.  References: scipy's binomial quantile for the tolerance, and
scipy.stats.chisquare for the χ² shown."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from analysis import DecisionState, ExperimentStats, Status, decide, decide_many, sequential_srm
from analysis.srm import srm_arrays
from tests.test_analysis_decide import conv, make_spec

ALPHA = 0.001


Flags = NDArray[np.bool_]


def gate(
    control: NDArray[np.float64], n: NDArray[np.float64], planned: float
) -> tuple[Flags, Flags, Flags]:
    """Per run (rows: looks at totals `n`): the rule decide follows, χ² at every look, and χ²
    once at the planned total."""
    runs, looks = control.shape
    counts = np.stack([control.ravel(), np.tile(n, runs) - control.ravel()], axis=1)
    _, p, log_bf = srm_arrays(counts, np.full_like(counts, 0.5))
    p, log_bf = p.reshape(runs, looks), log_bf.reshape(runs, looks)
    once = p[:, int(np.argmax(n >= planned))] < ALPHA
    seq = log_bf.max(axis=1) > -math.log(ALPHA)
    return seq | once, (p < ALPHA).any(axis=1), once


def paths(
    rng: np.random.Generator, share: float, runs: int, looks: int, total: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    step = total // looks
    control = np.cumsum(rng.binomial(step, share, (runs, looks)), axis=1).astype(float)
    return control, step * np.arange(1, looks + 1, dtype=float)


def test_false_invalid_stays_within_twice_srm_alpha_over_500_looks() -> None:
    runs = 4000
    decided, every_look, _ = gate(*paths(np.random.default_rng(1128), 0.5, runs, 500, 100_000),
                                  planned=100_000)  # fmt: skip
    # If the true rate were 2 × srm_alpha, more alarms than this happen with probability ≤ 0.1 %.
    limit = stats.binom.ppf(0.999, runs, 2 * ALPHA)
    assert decided.sum() <= limit
    # the old gate (χ² at every look) fails the same check by far: the simulation sees it
    assert every_look.sum() > 3 * limit


def test_a_small_imbalance_is_caught_at_least_as_often_as_by_a_single_chi_square() -> None:
    decided, _, once = gate(*paths(np.random.default_rng(505), 0.505, 2000, 500, 100_000),
                            planned=100_000)  # fmt: skip
    assert not (once & ~decided).any()  # every alarm of χ² at 100,000 units is decide's too
    assert decided.mean() >= once.mean() > 0.35  # 50.5/49.5 at 100,000: z ≈ 3.2


def test_decide_follows_the_rule_on_simulated_paths() -> None:
    rng = np.random.default_rng(77)
    spec = make_spec({"max_units_per_arm": 5000})
    control, n = paths(rng, 0.515, 40, 25, 10_000)
    expected, _, _ = gate(control, n, planned=10_000)
    states: list[DecisionState | None] = [None] * 40
    status = [Status.CONTINUE] * 40
    for look in range(25):
        requests = []
        for run in range(40):
            a, b = int(control[run, look]), int(n[look] - control[run, look])
            data = ExperimentStats(
                {"control": a, "treatment": b},
                {"click": {"control": conv(a, 0.1), "treatment": conv(b, 0.1)}},
            )
            requests.append((spec, data, (), states[run]))
        for run, d in enumerate(decide_many(requests)):
            states[run], status[run] = d.state, d.status
    assert [s is Status.INVALID for s in status] == expected.tolist()
    assert 0 < expected.sum() < 40  # both outcomes occur


def test_chi_square_alone_only_gates_at_the_horizon_look() -> None:
    # χ² p 2.8e-4 but sequential p 0.02: shown, not acted on, before the horizon
    a, b = 10_000, 10_520
    spec = make_spec({"max_units_per_arm": 20_000})
    data = ExperimentStats(
        {"control": a, "treatment": b},
        {"click": {"control": conv(a, 0.1), "treatment": conv(b, 0.1)}},
    )
    d = decide(spec, data)
    chi2 = stats.chisquare([a, b])
    assert d.srm_pvalue is not None
    assert math.isclose(d.srm_pvalue, chi2.pvalue, rel_tol=1e-9)
    assert d.sequential_srm_pvalue is not None
    assert math.isclose(d.sequential_srm_pvalue, sequential_srm([a, b], [1, 1]).pvalue)
    assert d.status is not Status.INVALID
    # the same imbalance at the horizon's total (2 × 10,260 ≥ 2 × 10,000 units): invalid
    d = decide(make_spec({"max_units_per_arm": 10_000}), data)
    assert d.status is Status.INVALID
    assert any("χ² p at the horizon look" in r for r in d.reasons)
