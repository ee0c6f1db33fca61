"""decide(): each status, the order of judgement, the numbers in the reasons, the state kept
across looks, and the edge cases that must never put a nan into a Decision.  The statistics
inside are those of confidence_sequence / gst_boundaries / srm_test, checked against
independent references in the other analysis tests; here they are compared with those
functions called directly."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from analysis import (
    ArmStats,
    DecisionState,
    ExperimentStats,
    Status,
    Threshold,
    confidence_sequence,
    cuped,
    decide,
    decide_many,
    gst_boundaries,
    pooled_theta,
    ratio_arm,
    srm_test,
)
from experiments.spec import ExperimentSpec


def make_spec(
    analysis: dict[str, Any] | None = None, arms: int = 2, **metrics: Any
) -> ExperimentSpec:
    variants = [
        {
            "key": key,
            "header_value": f"group-{key}",
            "weight": 100 / arms,
            "destination": {"host": key},
        }
        for key in ("control", "treatment", "third")[:arms]
    ]
    if arms == 3:
        variants[0]["weight"], variants[1]["weight"], variants[2]["weight"] = 34, 33, 33
    return ExperimentSpec.model_validate(
        {
            "name": "ranker-v2",
            "variants": variants,
            "metrics": {"primary": {"name": "click", "kind": "conversion"}, **metrics},
            "analysis": analysis or {},
        }
    )


def conv(n: int, rate: float) -> ArmStats:
    hits = round(n * rate)
    return ArmStats(n, hits, hits)


def normal(rng: np.random.Generator, n: int, mean: float, sd: float = 1.0) -> ArmStats:
    y = rng.normal(mean, sd, n)
    return ArmStats(n, float(y.sum()), float((y * y).sum()))


def stats(click: dict[str, ArmStats], **other: dict[str, ArmStats]) -> ExperimentStats:
    units = {k: v.n for k, v in click.items()}
    return ExperimentStats(units, {"click": click, **other})


def assert_no_nan(decision: Any) -> None:
    json.dumps(decision.to_dict(), allow_nan=False)  # raises on nan or inf anywhere


def test_burn_in_gives_no_verdict_and_says_how_far_it_is() -> None:
    d = decide(make_spec(), stats({"control": conv(60, 0.1), "treatment": conv(60, 0.9)}))
    assert d.status is Status.CONTINUE
    assert any("60 units in control" in r and "100 per arm" in r for r in d.reasons)
    assert_no_nan(d)
    # an arm without a single conversion is past burn-in too (test_analysis_degenerate.py)
    d = decide(make_spec(), stats({"control": conv(500, 0.0), "treatment": conv(500, 0.2)}))
    assert d.comparisons[0].verdict != "burn_in"


def test_a_clear_winner_is_declared_with_the_confidence_sequence_numbers() -> None:
    a, b = conv(4000, 0.10), conv(4000, 0.13)
    d = decide(make_spec(), stats({"control": a, "treatment": b}))
    cs = confidence_sequence(a, b, alpha=0.05, n_star=10_000, kind="proportion")
    assert d.status is Status.WINNER
    assert d.winner == "treatment"
    c = d.comparisons[0]
    assert (c.estimate, c.pvalue) == pytest.approx((cs.estimate, cs.pvalue), rel=1e-12)
    assert c.confidence_interval() == pytest.approx(cs.confidence_interval(), rel=1e-12)
    assert f"{cs.pvalue:.4g}" in d.summary()
    assert "95% CI" in d.summary()


def test_a_worse_treatment_is_harm_and_direction_decides_what_worse_means() -> None:
    a, b = conv(4000, 0.13), conv(4000, 0.10)
    d = decide(make_spec(), stats({"control": a, "treatment": b}))
    assert (d.status, d.harmful) == (Status.HARM, ("treatment",))
    spec = make_spec(primary={"name": "click", "kind": "conversion", "direction": "decrease"})
    d = decide(spec, stats({"control": a, "treatment": b}))
    assert (d.status, d.winner) == (Status.WINNER, "treatment")


def test_an_operational_guardrail_over_its_limit_is_harm_even_in_burn_in() -> None:
    guard = [
        Threshold("p99_latency_ms", 162.0, 150.0, "treatment"),
        Threshold("error_rate", 0.0, 0.001),
    ]
    d = decide(make_spec(), stats({"control": conv(10, 0.1), "treatment": conv(10, 0.1)}), guard)
    assert (d.status, d.harmful) == (Status.HARM, ("treatment",))
    assert any("162" in r and "150" in r for r in d.reasons)
    assert [g.status for g in d.guardrails] == ["fail", "pass"]
    low = Threshold("requests_per_s", 3.0, 10.0, bound="min")
    assert (
        decide(
            make_spec(), stats({"control": conv(10, 0.1), "treatment": conv(10, 0.1)}), [low]
        ).status
        is Status.HARM
    )


def test_a_guardrail_without_data_blocks_promotion_but_is_not_harm() -> None:
    data = stats({"control": conv(4000, 0.10), "treatment": conv(4000, 0.13)})
    d = decide(
        make_spec(), data, [Threshold("p99_latency_ms", None, 150.0), Threshold("x", math.nan, 1)]
    )
    assert d.status is Status.CONTINUE
    assert d.winner is None
    assert any("no data" in r for r in d.reasons)
    assert_no_nan(d)


def test_sample_ratio_mismatch_makes_the_result_invalid() -> None:
    data = stats({"control": conv(1000, 0.10), "treatment": conv(1200, 0.20)})
    d = decide(make_spec(), data)
    assert d.status is Status.INVALID
    assert d.srm_pvalue == pytest.approx(srm_test([1000, 1200], [50, 50]).pvalue, rel=1e-12)
    assert any("sample ratio mismatch" in r and f"{d.srm_pvalue:.3g}" in r for r in d.reasons)
    # a balanced split is no alarm
    assert (
        decide(
            make_spec(), stats({"control": conv(1000, 0.1), "treatment": conv(1030, 0.1)})
        ).status
        is Status.CONTINUE
    )


def test_metric_guardrails_are_non_inferiority_tests_with_margins() -> None:
    rng = np.random.default_rng(3)
    spec = make_spec(guardrails=[{"name": "revenue", "kind": "sum", "margin": 0.02}])
    click = {"control": conv(20_000, 0.10), "treatment": conv(20_000, 0.12)}
    hurt = {"control": normal(rng, 20_000, 10.0), "treatment": normal(rng, 20_000, 9.0)}
    d = decide(spec, stats(click, revenue=hurt))
    assert (d.status, d.harmful) == (Status.HARM, ("treatment",))
    assert any("revenue" in r and "harm" in r for r in d.reasons)
    same = {"control": normal(rng, 20_000, 10.0), "treatment": normal(rng, 20_000, 10.0)}
    d = decide(spec, stats(click, revenue=same))
    assert (d.status, d.winner) == (Status.WINNER, "treatment")  # shown within 2 %
    noisy = {
        "control": normal(rng, 20_000, 10.0, 60.0),
        "treatment": normal(rng, 20_000, 10.0, 60.0),
    }
    d = decide(spec, stats(click, revenue=noisy))
    assert d.status is Status.WINNER_PENDING_GUARDRAILS  # test_analysis_pending.py
    assert any("not yet shown within its margin" in r for r in d.reasons)


def test_no_difference_inside_the_mde_and_at_the_horizon() -> None:
    rng = np.random.default_rng(4)
    spec = make_spec({"mde": 0.05}, primary={"name": "rev", "kind": "sum"})
    arms = {"control": normal(rng, 200_000, 10.0), "treatment": normal(rng, 200_000, 10.0)}
    d = decide(spec, ExperimentStats({k: v.n for k, v in arms.items()}, {"rev": arms}))
    assert d.status is Status.NO_DIFFERENCE
    assert any("MDE" in r for r in d.reasons)
    spec = make_spec({"max_units_per_arm": 500})
    d = decide(spec, stats({"control": conv(500, 0.1), "treatment": conv(500, 0.1)}))
    assert d.status is Status.NO_DIFFERENCE
    assert any("horizon of 500" in r for r in d.reasons)


def test_state_keeps_the_running_minimum_and_survives_json() -> None:
    spec = make_spec()
    strong = stats({"control": conv(4000, 0.10), "treatment": conv(4000, 0.13)})
    weak = stats({"control": conv(4100, 0.10), "treatment": conv(4100, 0.11)})
    first = decide(spec, strong)
    restored = DecisionState.from_dict(json.loads(json.dumps(first.state.to_dict())))
    before = json.dumps(restored.to_dict())
    second = decide(spec, weak, state=restored)
    assert json.dumps(restored.to_dict()) == before  # the input state is not changed
    assert second.comparisons[0].pvalue == first.comparisons[0].pvalue  # min kept
    assert second.status is Status.WINNER
    assert second.state.looks == 2
    fresh = decide(spec, weak)
    assert fresh.comparisons[0].pvalue > first.comparisons[0].pvalue
    changed = decide(make_spec({"alpha": 0.01}), weak, state=first.state)
    assert any("starts afresh" in r for r in changed.reasons)
    with pytest.raises(ValueError, match="unknown"):
        DecisionState.from_dict({"bogus": 1})


GST = {"method": "group-sequential", "max_units_per_arm": 1000, "looks": 4, "min_units_per_arm": 50}


def test_group_sequential_looks_only_at_planned_fractions() -> None:
    spec = make_spec(GST)
    d1 = decide(spec, stats({"control": conv(240, 0.10), "treatment": conv(240, 0.25)}))
    assert d1.status is Status.CONTINUE
    assert d1.state.gst_fractions == []
    assert any("between group-sequential looks" in r for r in d1.reasons)
    d2 = decide(
        spec, stats({"control": conv(260, 0.10), "treatment": conv(260, 0.25)}), state=d1.state
    )
    c = d2.comparisons[0]
    boundary = gst_boundaries([0.26], alpha=0.05).z[-1]
    assert c.boundary == pytest.approx(boundary)
    assert abs(c.statistic or 0) >= boundary
    assert (d2.status, d2.winner) == (Status.WINNER, "treatment")
    # once crossed, the comparison stays stopped
    d3 = decide(
        spec, stats({"control": conv(520, 0.10), "treatment": conv(520, 0.10)}), state=d2.state
    )
    assert d3.status is Status.WINNER
    # a final look without a crossing is no difference
    s = None
    for n in (250, 500, 750, 1000):
        s = decide(
            spec, stats({"control": conv(n, 0.10), "treatment": conv(n, 0.10)}), state=s and s.state
        )
    assert s is not None
    assert s.status is Status.NO_DIFFERENCE
    assert s.state.gst_fractions == [0.25, 0.5, 0.75, 1.0]


def test_alpha_is_split_over_treatment_arms_and_the_best_arm_wins() -> None:
    spec = make_spec(arms=3)
    data = stats(
        {"control": conv(6000, 0.10), "treatment": conv(5800, 0.125), "third": conv(5800, 0.135)}
    )
    d = decide(spec, data)
    assert (d.status, d.winner) == (Status.WINNER, "third")
    assert {c.alpha for c in d.comparisons} == {0.025}


def test_decide_many_keeps_experiments_apart() -> None:
    """A batch mixing designs (relative, group-sequential, other α, CUPED, three arms) gives
    each experiment the decision it gets alone."""
    specs = [
        make_spec(),
        make_spec({"relative": True}),
        make_spec({"alpha": 0.01, "mde": 0.5}),
        make_spec({"method": "group-sequential", "max_units_per_arm": 6000}),
        make_spec({"cuped": True}),
    ]
    requests: list[Any] = []
    for i in range(20):
        rate = 0.1 + 0.003 * i
        data = stats({"control": conv(3000, 0.1), "treatment": conv(3000 + i, rate)})
        requests.append((specs[i % len(specs)], data, (), None))
    three = stats(
        {"control": conv(3000, 0.1), "treatment": conv(3000, 0.12), "third": conv(3000, 0.1)}
    )
    requests.append((make_spec(arms=3), three, (), None))
    batch = decide_many(requests)
    single = [decide(*r) for r in requests]
    assert [b.to_dict() for b in batch] == [s.to_dict() for s in single]
    assert len({b.status for b in batch}) > 1


def test_edge_cases_never_leak_nan() -> None:
    rel = make_spec({"relative": True}, primary={"name": "rev", "kind": "sum"})
    zero = ArmStats(500, 0.0, 0.0)
    some = ArmStats(500, 50.0, 80.0)
    # a zero control mean leaves the lift undefined: the difference is judged instead
    for a, b, status in [
        (zero, some, Status.WINNER),
        (zero, zero, Status.CONTINUE),
        (some, some, Status.CONTINUE),
    ]:
        d = decide(
            rel,
            ExperimentStats(
                {"control": 500, "treatment": 500}, {"rev": {"control": a, "treatment": b}}
            ),
        )
        assert d.status is status
        assert d.comparisons[0].relative is (a is some)
        assert_no_nan(d)
    huge = make_spec(primary={"name": "rev", "kind": "sum"})
    y = 1e9 + np.random.default_rng(2).normal(0, 1, 1000)
    m2 = float(((y - y.mean()) ** 2).sum())
    arm = ArmStats(1000, float(y.sum()), float((y * y).sum()), m2=m2)
    d = decide(
        huge,
        ExperimentStats(
            {"control": 1000, "treatment": 1000}, {"rev": {"control": arm, "treatment": arm}}
        ),
    )
    c = d.comparisons[0]
    assert c.ci_high is not None
    assert c.ci_low is not None
    assert 0 < c.ci_high - c.ci_low < 1
    assert_no_nan(d)
    no_metrics = ExperimentSpec.model_validate(
        {**make_spec().model_dump(by_alias=True), "metrics": None}
    )
    d = decide(no_metrics, ExperimentStats({"control": 10, "treatment": 12}))
    assert d.status is Status.CONTINUE
    assert "no metrics" in d.summary()
    assert decide(make_spec(), ExperimentStats({})).status is Status.CONTINUE


def test_cuped_narrows_the_interval_and_ratio_metrics_use_the_delta_method() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(10, 3, (2, 3000))
    y = x + rng.normal(0, 1, (2, 3000))
    y[1] += 0.1
    arms = {
        k: ArmStats(3000, float(y[i].sum()), float((y[i] ** 2).sum()), float(x[i].sum()),
                    float((x[i] ** 2).sum()), float((x[i] * y[i]).sum()))
        for i, k in enumerate(("control", "treatment"))
    }  # fmt: skip
    data = ExperimentStats({"control": 3000, "treatment": 3000}, {"rev": arms})
    plain = decide(make_spec(primary={"name": "rev", "kind": "sum"}), data).comparisons[0]
    adjusted = decide(
        make_spec({"cuped": True}, primary={"name": "rev", "kind": "sum"}), data
    ).comparisons[0]
    a_adj, b_adj = cuped(arms["control"], arms["treatment"])
    cs = confidence_sequence(a_adj, b_adj, alpha=0.05, n_star=10_000)
    assert adjusted.confidence_interval() == pytest.approx(cs.confidence_interval(), rel=1e-12)
    assert (adjusted.ci_high or 0) - (adjusted.ci_low or 0) < (
        (plain.ci_high or 0) - (plain.ci_low or 0)
    ) / 2


def test_ratio_arm_is_the_linearised_mean() -> None:
    rng = np.random.default_rng(10)
    den = rng.poisson(5, 2000).astype(float) + 1
    num = den * 0.3 + rng.normal(0, 1, 2000)
    r = num.sum() / den.sum()
    z = r + (num - r * den) / den.mean()  # the linearisation, from raw rows
    arm = ratio_arm(
        ArmStats(2000, float(num.sum()), float((num**2).sum())),
        ArmStats(2000, float(den.sum()), float((den**2).sum())),
        float(((num - num.mean()) * (den - den.mean())).sum()),
    )
    assert arm.mean == pytest.approx(r, rel=1e-12)
    assert arm.variance == pytest.approx(z.var(ddof=1), rel=1e-9)
    with pytest.raises(ValueError, match="same units"):
        ratio_arm(ArmStats(3, 1, 1), ArmStats(4, 1, 1), 0.0)


def test_stats_from_the_report_json() -> None:
    ratio = {"numerator": "rev", "denominator": "sess"}
    report = {
        "control": {"exposures": 3, "metrics": {
            "rev": {"n": 3, "sum": 6.0, "sum_sq": 14.0, "m2": 2.0},
            "sess": {"n": 3, "sum": 3.0, "sum_sq": 5.0, "m2": 2.0},
            "rps": {"n": 3, **ratio, "sum_num_den": 7.0, "c_num_den": 1.0},
        }},
        "treatment": {"exposures": 4, "metrics": {
            "rev": {"n": 4, "sum": 8.0, "sum_sq": 20.0, "m2": 4.0},
            "sess": {"n": 4, "sum": 4.0, "sum_sq": 6.0, "m2": 2.0},
            "rps": {"n": 4, **ratio, "sum_num_den": 9.0, "c_num_den": 1.0},
        }},
    }  # fmt: skip
    data = ExperimentStats.from_report(report)
    assert data.units == {"control": 3.0, "treatment": 4.0}
    assert data.metrics["rev"]["treatment"].m2 == 4.0
    assert data.metrics["rps"]["control"].mean == pytest.approx(2.0)


def test_the_spec_analysis_section_is_validated() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="group-sequential method needs max_units_per_arm"):
        make_spec({"method": "group-sequential"})
    with pytest.raises(ValidationError, match="below min_units_per_arm"):
        make_spec({"max_units_per_arm": 50})
    with pytest.raises(ValidationError, match="alpha"):
        make_spec({"alpha": 0.7})
    with pytest.raises(ValidationError, match="relative"):
        make_spec({"relative": "yes"})
    assert make_spec({"max_units_per_arm": 4000}).analysis.mixture_n == 8000


def one(spec: ExperimentSpec, arms: dict[str, ArmStats], name: str = "y") -> ExperimentStats:
    return ExperimentStats({k: v.n for k, v in arms.items()}, {name: arms})


def test_relative_lift_is_the_log_ratio_sequence_and_respects_a_negative_control() -> None:
    from tests.test_analysis_degenerate import mixture_interval

    rng = np.random.default_rng(12)
    spec = make_spec({"relative": True}, primary={"name": "y", "kind": "mean"})
    a, b = normal(rng, 5000, 10, 5), normal(rng, 5000, 10.5, 5)
    c = decide(spec, one(spec, {"control": a, "treatment": b})).comparisons[0]
    # reference: the mixture interval of φ = ln(ȳ_b/ȳ_a) mapped back by e^φ − 1
    phi = math.log(b.mean / a.mean)
    v = b.variance / (b.mean**2 * b.n) + a.variance / (a.mean**2 * a.n)
    low, high = mixture_interval(phi, v, 10_000, 10_000, 0.05)
    assert (c.estimate, c.ci_low, c.ci_high) == pytest.approx(
        (math.expm1(phi), math.expm1(low), math.expm1(high)), rel=1e-12
    )
    # close to the delta-method sequence, which it replaces for its lopsided errors
    cs = confidence_sequence(a, b, alpha=0.05, n_star=10_000, relative=True)
    assert (c.ci_low, c.ci_high) == pytest.approx((cs.ci_low, cs.ci_high), abs=1e-3)
    assert c.estimate == pytest.approx(b.mean / a.mean - 1, rel=1e-12)
    # a loss going from −10 to −9 is an improvement of 10 %, not a 10 % drop
    a, b = normal(rng, 5000, -10, 5), normal(rng, 5000, -9, 5)
    d = decide(spec, one(spec, {"control": a, "treatment": b}))
    assert (d.status, d.winner) == (Status.WINNER, "treatment")
    assert d.comparisons[0].estimate == pytest.approx((b.mean - a.mean) / abs(a.mean), rel=1e-12)


def test_an_empty_running_interval_makes_the_result_invalid() -> None:
    first = decide(make_spec(), stats({"control": conv(4000, 0.10), "treatment": conv(4000, 0.13)}))
    flipped = stats({"control": conv(40_000, 0.13), "treatment": conv(40_000, 0.10)})
    d = decide(make_spec(), flipped, state=first.state)
    assert d.status is Status.INVALID
    assert any("running interval is empty" in r for r in d.reasons)
    assert_no_nan(d)


def test_secondary_metrics_get_benjamini_hochberg_including_p_zero() -> None:
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(13)
    spec = make_spec(secondary=[{"name": n, "kind": "sum"} for n in ("sessions", "dwell", "flat")])
    means = {"sessions": 1.0, "dwell": 0.05, "flat": 0.0}
    data = {"click": {"control": conv(20_000, 0.1), "treatment": conv(20_000, 0.1)}}
    for name, shift in means.items():
        data[name] = {
            "control": normal(rng, 20_000, 10),
            "treatment": normal(rng, 20_000, 10 + shift),
        }
    d = decide(spec, stats(data.pop("click"), **data))
    secondary = [c for c in d.comparisons if c.role == "secondary"]
    raw = [c.pvalue for c in secondary]
    assert raw[0] == 0.0  # a strong effect at this size underflows
    expected = multipletests(raw, method="fdr_bh")[1]
    assert [c.adjusted_pvalue for c in secondary] == pytest.approx(list(expected), rel=1e-12)


def test_cuped_on_conversions_uses_the_adjusted_variance() -> None:
    rng = np.random.default_rng(14)
    x = rng.random((2, 6000)) < 0.3
    y = (x & (rng.random((2, 6000)) < 0.8)) | (rng.random((2, 6000)) < 0.05)
    x, y = x.astype(float), y.astype(float)
    arms = {
        k: ArmStats(6000, y[i].sum(), y[i].sum(), x[i].sum(), x[i].sum(), (x[i] * y[i]).sum())
        for i, k in enumerate(("control", "treatment"))
    }
    data = ExperimentStats({"control": 6000, "treatment": 6000}, {"click": arms})
    plain = decide(make_spec(), data).comparisons[0]
    adjusted = decide(make_spec({"cuped": True}), data).comparisons[0]
    a_adj, b_adj = cuped(arms["control"], arms["treatment"])
    cs = confidence_sequence(a_adj, b_adj, alpha=0.05, n_star=10_000, kind="mean")
    assert adjusted.confidence_interval() == pytest.approx(cs.confidence_interval(), rel=1e-12)
    width = lambda c: (c.ci_high or 0) - (c.ci_low or 0)  # noqa: E731
    assert width(adjusted) < 0.8 * width(plain)


def test_a_ratio_without_a_denominator_stays_in_burn_in() -> None:
    zero = ratio_arm(ArmStats(500, 40.0, 60.0), ArmStats(500, 0.0, 0.0), 0.0)
    assert zero.n == 0
    spec = make_spec(
        primary={"name": "rps", "kind": "ratio", "numerator": "rev", "denominator": "sess"}
    )
    good = ratio_arm(ArmStats(500, 400.0, 900.0), ArmStats(500, 800.0, 1800.0), 10.0)
    d = decide(
        spec,
        ExperimentStats(
            {"control": 500, "treatment": 500}, {"rps": {"control": zero, "treatment": good}}
        ),
    )
    assert d.status is Status.CONTINUE
    assert d.comparisons[0].verdict == "burn_in"


def test_a_state_from_another_experiment_or_design_starts_afresh() -> None:
    strong = stats({"control": conv(4000, 0.10), "treatment": conv(4000, 0.13)})
    same = stats({"control": conv(150, 0.10), "treatment": conv(150, 0.10)})
    other = ExperimentSpec.model_validate(
        {**make_spec().model_dump(by_alias=True), "name": "other"}
    )
    d = decide(other, same, state=decide(make_spec(), strong).state)
    assert d.status is Status.CONTINUE
    assert any("starts afresh" in r for r in d.reasons)
    skewed = decide(make_spec(), stats({"control": conv(1000, 0.1), "treatment": conv(1300, 0.1)}))
    assert skewed.status is Status.INVALID
    balanced = stats({"control": conv(5000, 0.1), "treatment": conv(5000, 0.1)})
    assert decide(make_spec(), balanced, state=skewed.state).status is Status.INVALID  # kept
    changed = decide(make_spec({"alpha": 0.01}), balanced, state=skewed.state)
    assert changed.status is Status.CONTINUE  # a new design: the SRM record restarts too


def test_group_sequential_second_look_and_an_exhausted_design() -> None:
    spec = make_spec(GST)
    d1 = decide(spec, stats({"control": conv(260, 0.10), "treatment": conv(260, 0.11)}))
    d2 = decide(
        spec, stats({"control": conv(530, 0.10), "treatment": conv(530, 0.11)}), state=d1.state
    )
    assert d2.state.gst_fractions == [0.26, 0.53]
    assert d2.comparisons[0].boundary == pytest.approx(gst_boundaries([0.26, 0.53]).z[-1])
    assert d2.status is Status.CONTINUE
    # three arms: one has too few units with data, so it is in burn-in at the final look
    spec3 = make_spec({"method": "group-sequential", "max_units_per_arm": 1000, "looks": 1}, arms=3)
    final = ExperimentStats(
        {"control": 1000, "treatment": 1000, "third": 1000},
        {"click": {"control": conv(1000, 0.1), "treatment": conv(1000, 0.1), "third": conv(40, 0)}},
    )
    d = decide(spec3, final)
    assert [c.verdict for c in d.comparisons] == ["no_difference", "burn_in"]
    assert d.status is Status.NO_DIFFERENCE
    later = stats(
        {"control": conv(1100, 0.1), "treatment": conv(1100, 0.1), "third": conv(1100, 0.2)}
    )
    assert decide(spec3, later, state=d.state).status is Status.NO_DIFFERENCE


def test_a_zero_margin_must_be_shown_and_guardrails_split_alpha() -> None:
    rng = np.random.default_rng(15)
    spec = make_spec(
        guardrails=[{"name": "rev", "kind": "sum", "margin": 0}, {"name": "rev2", "kind": "sum"}]
    )
    click = {"control": conv(20_000, 0.10), "treatment": conv(20_000, 0.12)}
    rev = {"control": normal(rng, 20_000, 10), "treatment": normal(rng, 20_000, 10)}
    d = decide(spec, stats(click, rev=rev, rev2=rev))
    assert d.status is Status.WINNER_PENDING_GUARDRAILS
    assert any("rev (treatment)" in r and "not yet shown" in r for r in d.reasons)
    assert {c.alpha for c in d.comparisons if c.role == "guardrail"} == {0.025}


def test_a_paused_arm_is_neither_judged_nor_counted() -> None:
    spec = make_spec({"max_units_per_arm": 600}, arms=3)
    data = spec.model_dump(by_alias=True)
    data["variants"][0]["weight"], data["variants"][1]["weight"], data["variants"][2]["weight"] = (
        50,
        50,
        0,
    )
    paused = ExperimentSpec.model_validate(data)
    d = decide(paused, stats({"control": conv(600, 0.1), "treatment": conv(600, 0.1)}))
    assert [c.variant for c in d.comparisons] == ["treatment"]
    assert d.comparisons[0].alpha == 0.05
    assert d.status is Status.NO_DIFFERENCE


def test_threshold_readings_as_strings_and_on_control() -> None:
    assert Threshold("p99", "0.16", 0.15).check().status == "fail"
    assert Threshold("p99", "NaN", 0.15).check().status == "no_data"
    assert Threshold("p99", "fast", 0.15).check().status == "no_data"
    data = stats({"control": conv(4000, 0.10), "treatment": conv(4000, 0.13)})
    d = decide(make_spec(), data, [Threshold("p99", 0.2, 0.15, "control")])
    assert (d.status, d.winner) == (Status.WINNER, "treatment")  # the stable model's problem
    assert any("p99 (control) is 0.2" in r for r in d.reasons)


def test_tiny_scales_do_not_leak_nan() -> None:
    spec = make_spec(primary={"name": "y", "kind": "sum"})
    y = 1e-170 * np.random.default_rng(16).normal(1, 0.1, 500)
    arm = ArmStats(500, float(y.sum()), float((y * y).sum()))
    d = decide(spec, one(spec, {"control": arm, "treatment": arm}))
    assert_no_nan(d)
    assert_no_nan(decide(spec, one(spec, {"control": arm, "treatment": arm}), state=d.state))


def test_cuped_theta_uses_the_stable_co_moments_when_given() -> None:
    rng = np.random.default_rng(17)
    x = 1e8 + rng.normal(0, 1, (2, 4000))
    y = (x - 1e8) + rng.normal(0, 0.5, (2, 4000))
    arms = []
    for i in range(2):
        xi, yi = x[i], y[i]
        arms.append(
            ArmStats(
                4000, float(yi.sum()), float((yi**2).sum()), float(xi.sum()), float((xi**2).sum()),
                float((xi * yi).sum()), m2=float(((yi - yi.mean()) ** 2).sum()),
                m2_x=float(((xi - xi.mean()) ** 2).sum()),
                c_xy=float(((xi - xi.mean()) * (yi - yi.mean())).sum()),
            )
        )  # fmt: skip
    pooled_x, pooled_y = x.ravel(), y.ravel()
    expected = np.cov(pooled_x, pooled_y)[0, 1] / np.var(pooled_x, ddof=1)
    assert pooled_theta(arms[0], arms[1]) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(1.0, abs=0.05)
