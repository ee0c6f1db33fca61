"""Degenerate and impossible inputs (docs/statistics.md §11): a dead candidate is harm, constant
arms are an exact difference, a lift over a zero control falls back to the difference, and
counts no experiment can produce are refused with the metric and arm named.

References: the mixture interval recomputed from its closed form (docs/statistics.md §5 and
§6, written out in `mixture_interval`), the ½-success prior from its definition, the lift
fallback against confidence_sequence on the difference, and the error rate of the prior on
rare events by a seeded simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import ArmStats, ExperimentStats, Status, confidence_sequence, decide, decide_many
from tests.test_analysis_decide import assert_no_nan, conv, make_spec, normal, one, stats


def mixture_interval(
    d: float, v: float, n: float, n_star: float, alpha: float
) -> tuple[float, float]:
    """Reference: the normal-mixture confidence sequence written out from its formula,
    ρ² = (−2 ln α + ln(1 − 2 ln α))/n*, τ² = ρ² N v, radius = √(v(v+τ²)/τ² ln((v+τ²)/(vα²)))."""
    rho2 = (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha))) / n_star
    tau2 = rho2 * n * v
    radius = math.sqrt(v * (v + tau2) / tau2 * math.log((v + tau2) / (v * alpha**2)))
    return d - radius, d + radius


def test_a_candidate_without_conversions_is_harm_with_the_continuity_prior() -> None:
    spec = make_spec({"max_units_per_arm": 20_000})
    a, b = conv(24_000, 0.10), conv(24_000, 0.0)
    d = decide(spec, stats({"control": a, "treatment": b}))
    assert (d.status, d.harmful) == (Status.HARM, ("treatment",))
    # the dead arm's variance is that of p̃ = (0 + ½)/(n + 1)
    pt = 0.5 / 24_001
    v = 0.1 * 0.9 / 24_000 + pt * (1 - pt) / 24_000
    low, high = mixture_interval(-0.1, v, 48_000, 40_000, 0.05)
    c = d.comparisons[0]
    assert (c.ci_low, c.ci_high) == pytest.approx((low, high), rel=1e-9)
    assert not any("burn-in" in r for r in d.reasons)
    # all conversions in the candidate: the mirror image, a winner
    full = decide(spec, stats({"control": a, "treatment": conv(24_000, 1.0)}))
    assert (full.status, full.winner) == (Status.WINNER, "treatment")
    # one conversion in 10,000 was harm before and stays harm (plug-in variance unchanged)
    one_in = decide(spec, stats({"control": conv(10_000, 0.1), "treatment": conv(10_000, 1e-4)}))
    assert one_in.status is Status.HARM


def test_a_dead_candidate_is_harm_as_soon_as_the_interval_allows() -> None:
    # With the control at 10 %, the first sample size whose interval excludes 0 (from the
    # reference formula) is where decide turns to harm, and not one unit earlier.
    spec = make_spec()

    def upper(n: int) -> float:
        pt = 0.5 / (n + 1)
        v = 0.09 / n + pt * (1 - pt) / n
        return mixture_interval(-0.1, v, 2 * n, 10_000, 0.05)[1]

    first = next(n for n in range(100, 5000, 10) if upper(n) < 0)
    for n, status in [(first - 10, Status.CONTINUE), (first, Status.HARM)]:
        d = decide(spec, stats({"control": conv(n, 0.10), "treatment": conv(n, 0.0)}))
        assert d.status is status, n
    assert first <= 400  # a broken model is caught within a few hundred units per arm


def test_rare_events_with_the_continuity_prior_keep_the_error_rate() -> None:
    """A/A at a 0.2 % conversion rate, 1,000 units per arm (often no conversion at all in an
    arm): a false winner or harm at one look stays ≤ α.  2,000 seeded runs; the binomial
    standard error of a 5 % rate is 0.49 %, so 3 SE above α is the tolerance."""
    rng = np.random.default_rng(2026)
    spec = make_spec()
    hits = rng.binomial(1000, 0.002, (2000, 2))
    requests = [
        (
            spec,
            stats({"control": conv(1000, x / 1000), "treatment": conv(1000, y / 1000)}),
            (),
            None,
        )
        for x, y in hits
    ]
    decided = [d.status in (Status.WINNER, Status.HARM) for d in decide_many(requests)]
    assert (hits == 0).any(axis=1).mean() > 0.2  # the case under test is common here
    assert np.mean(decided) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 2000)


def test_constant_arms_are_an_exact_difference() -> None:
    spec = make_spec({"mde": 0.05}, primary={"name": "y", "kind": "mean"})
    five, four = ArmStats(500, 2500.0, 12_500.0), ArmStats(500, 2000.0, 8000.0)
    assert np.var(np.full(500, 5.0)) == 0  # reference: the arms are constants
    d = decide(spec, one(spec, {"control": five, "treatment": four}))
    c = d.comparisons[0]
    assert (d.status, c.estimate, c.ci_low, c.ci_high, c.pvalue) == (
        Status.HARM, -1.0, -1.0, -1.0, 0.0,
    )  # fmt: skip
    assert (decide(spec, one(spec, {"control": four, "treatment": five})).status) is Status.WINNER
    same = decide(spec, one(spec, {"control": five, "treatment": five}))
    assert (same.status, same.comparisons[0].pvalue) == (Status.NO_DIFFERENCE, 1.0)
    assert_no_nan(d)
    gst = make_spec(
        {"method": "group-sequential", "max_units_per_arm": 500, "looks": 1},
        primary={"name": "y", "kind": "mean"},
    )
    g = decide(gst, one(gst, {"control": four, "treatment": five}))
    assert (g.status, g.winner) == (Status.WINNER, "treatment")
    assert_no_nan(g)


def test_a_lift_over_a_zero_control_is_judged_as_the_difference() -> None:
    rng = np.random.default_rng(31)
    spec = make_spec({"relative": True}, primary={"name": "y", "kind": "mean"})
    tiny = ArmStats(2000, 2000 * 1e-18, 2000 * 1e-36)  # a constant 1e-18
    b = normal(rng, 2000, 0.014, 0.01)
    d = decide(spec, one(spec, {"control": tiny, "treatment": b}))
    cs = confidence_sequence(tiny, b, alpha=0.05, n_star=10_000, kind="mean")
    c = d.comparisons[0]
    assert not c.relative
    assert (c.estimate, c.ci_low, c.ci_high) == pytest.approx(
        (cs.estimate, cs.ci_low, cs.ci_high), rel=1e-9
    )
    assert any("relative lift is undefined" in r for r in d.reasons)
    assert "e+1" not in d.summary()  # no lift of +1.4e18 %
    # an ordinary control keeps the lift
    normal_control = decide(spec, one(spec, {"control": normal(rng, 2000, 1.0), "treatment": b}))
    assert normal_control.comparisons[0].relative


@pytest.mark.parametrize(
    ("arm", "match"),
    [(ArmStats(100, 120.0, 120.0), "120 conversions among 100"), (ArmStats(100, -1, 1), "-1")],
)
def test_impossible_conversion_counts_are_refused_naming_metric_and_arm(
    arm: ArmStats, match: str
) -> None:
    data = stats({"control": conv(100, 0.1), "treatment": arm})
    with pytest.raises(ValueError, match=match) as info:
        decide(make_spec(), data)
    assert "'click'" in str(info.value)
    assert "'treatment'" in str(info.value)


def test_negative_counts_are_refused_naming_the_arm() -> None:
    with pytest.raises(ValueError, match="'treatment'"):
        decide(make_spec(), ExperimentStats({"control": 100, "treatment": -3}))
    report = {
        "control": {"exposures": 10, "metrics": {"click": {"n": 10, "sum": 1, "sum_sq": 1}}},
        "treatment": {"exposures": 10, "metrics": {"click": {"n": -10, "sum": 1, "sum_sq": 1}}},
    }
    with pytest.raises(ValueError, match="metric 'click', arm 'treatment'"):
        ExperimentStats.from_report(report)
    report["treatment"]["exposures"] = -1
    with pytest.raises(ValueError, match="arm 'treatment'"):
        ExperimentStats.from_report(report)


def test_the_horizon_ends_the_test_even_without_enough_metric_data() -> None:
    spec = make_spec({"max_units_per_arm": 20_000})
    units = {"control": 24_000, "treatment": 24_000}
    # the candidate logs almost no events: 24,000 assigned, 40 with data
    data = ExperimentStats(
        units, {"click": {"control": conv(24_000, 0.1), "treatment": conv(40, 0)}}
    )
    d = decide(spec, data)
    assert d.status is Status.NO_DIFFERENCE
    assert any("horizon of 20000 assigned units per arm is reached" in r for r in d.reasons)
    # before the horizon it is burn-in, as before
    early = ExperimentStats(
        {"control": 1000, "treatment": 1000},
        {"click": {"control": conv(1000, 0.1), "treatment": conv(40, 0)}},
    )
    assert decide(spec, early).status is Status.CONTINUE
