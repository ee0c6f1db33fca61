"""A clear winner whose guardrail metric is not yet shown within its margin is
`winner_pending_guardrails` (continue), never `no_difference`, not even at the horizon.

Reference: each seeded run's guardrail verdict recomputed with confidence_sequence called
directly (non-inferior iff its lower bound lies above −margin·|control mean|), and the primary
verdict likewise; the status must follow from the two in every run."""

from __future__ import annotations

import numpy as np

from analysis import ArmStats, Status, confidence_sequence, decide
from experiments.verdict import VERDICTS
from tests.test_analysis_decide import conv, make_spec, stats


def revenue(rng: np.random.Generator, n: int, mean: float, sd: float) -> ArmStats:
    y = rng.normal(mean, sd, n)
    return ArmStats(n, float(y.sum()), float((y * y).sum()))


def test_a_winner_with_an_unproven_guardrail_is_pending_in_every_seeded_run() -> None:
    n, margin = 20_000, 0.02
    spec = make_spec(
        {"max_units_per_arm": n}, guardrails=[{"name": "rev", "kind": "sum", "margin": margin}]
    )
    rng = np.random.default_rng(1313)
    click = {"control": conv(n, 0.10), "treatment": conv(n, 0.12)}  # +20 %
    primary = confidence_sequence(
        click["control"], click["treatment"], alpha=0.05, n_star=2 * n, kind="proportion"
    )
    assert primary.pvalue < 1e-6  # a clear winner on the primary metric
    statuses = []
    for _ in range(100):
        rev = {"control": revenue(rng, n, 10.0, 40.0), "treatment": revenue(rng, n, 10.0, 40.0)}
        d = decide(spec, stats(click, rev=rev))
        cs = confidence_sequence(rev["control"], rev["treatment"], alpha=0.05, n_star=2 * n)
        bound = -margin * abs(rev["control"].mean)
        if cs.ci_low > bound:
            expected = Status.WINNER
        elif cs.ci_high < bound:
            expected = Status.HARM
        else:
            expected = Status.WINNER_PENDING_GUARDRAILS
            assert any(
                "horizon of 20000 units per arm is reached" in r
                and "guardrail rev is still not shown within its margin" in r
                for r in d.reasons
            )
        assert d.status is expected
        statuses.append(d.status)
    assert Status.NO_DIFFERENCE not in statuses
    # the case under test is the common one with this much noise
    assert statuses.count(Status.WINNER_PENDING_GUARDRAILS) > 50


def test_before_the_horizon_pending_names_the_guardrail() -> None:
    rng = np.random.default_rng(7)
    spec = make_spec(guardrails=[{"name": "rev", "kind": "sum", "margin": 0.01}])
    click = {"control": conv(8000, 0.10), "treatment": conv(8000, 0.12)}
    rev = {"control": revenue(rng, 8000, 10.0, 40.0), "treatment": revenue(rng, 8000, 10.0, 40.0)}
    d = decide(spec, stats(click, rev=rev))
    assert (d.status, d.winner) == (Status.WINNER_PENDING_GUARDRAILS, None)
    assert any("guardrail metric rev (treatment)" in r and "not yet shown" in r for r in d.reasons)
    assert not any("horizon" in r for r in d.reasons)
    # a guardrail metric with no data at all is unproven as well
    d = decide(spec, stats(click))
    assert d.status is Status.WINNER_PENDING_GUARDRAILS


def test_every_status_has_a_verdict_and_pending_means_continue() -> None:
    assert set(VERDICTS) == {s.value for s in Status}
    assert VERDICTS[Status.WINNER_PENDING_GUARDRAILS.value] == "continue"
