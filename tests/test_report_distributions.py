"""The report's per-arm distributions from the folded bins: quantiles within a bin's width of
numpy's on the same unit values, the ECDF rising to 1 with the units at 0 counted, and the
chart on a log axis only when every value shown is positive."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiments import load_spec
from experiments.distributions import PER_DECADE, export_distributions
from experiments.foldbatch import Exposure, UnitState, fold_batch
from experiments.folding import Event, FoldPlan, export
from experiments.report_distributions import distribution_figures, distributions_section

WIDTH = math.log(10 ** (1 / PER_DECADE))  # a bin's width on the log scale


def folded(values: dict[str, np.ndarray]) -> dict[str, object]:
    """A phase report of one `revenue` sum metric whose units have these totals per arm."""
    spec = load_spec({
        "name": "dist",
        "variants": [{"key": k, "weight": 50, "header_value": f"g-{k}", "destination": {"host": k}}
                     for k in values],
        "metrics": {"primary": {"name": "revenue", "kind": "sum"}},
    })  # fmt: skip
    plan = FoldPlan.from_spec(spec)
    exposures, events = [], []
    for arm, totals in values.items():
        for i, v in enumerate(totals):
            exposures.append(Exposure(f"{arm}-{i}", arm, 0.0))
            if v:
                events.append(Event(f"{arm}-{i}", f"{arm}-{i}", "revenue", float(v), 1.0))
    states = {x.unit: UnitState() for x in exposures}
    stats: dict[str, float] = {}
    shifts: dict[str, float] = {}
    fold_batch(plan, states, exposures, events, stats, shifts)
    return {"arms": export(plan, stats, shifts),
            "distributions": export_distributions(stats, plan.histograms)}  # fmt: skip


def test_quantiles_and_ecdf_follow_the_unit_values() -> None:
    rng = np.random.default_rng(3)
    control = np.where(rng.random(3000) < 0.6, 0.0, rng.lognormal(3, 1, 3000)).round(2)
    treatment = np.where(rng.random(3000) < 0.5, 0.0, rng.lognormal(3.2, 0.8, 3000)).round(2)
    section = distributions_section(folded({"control": control, "treatment": treatment}))
    assert section is not None
    for arm, values in (("control", control), ("treatment", treatment)):
        d = section["revenue"][arm]
        assert (d["units"], d["zeros"]) == (len(values), int((values == 0).sum()))
        assert d["mean"] == pytest.approx(values.mean(), rel=1e-12)
        for name, q in (("p75", 0.75), ("p90", 0.9), ("p99", 0.99)):
            # Reference: numpy's quantile of the same values; the bins are 10^(1/20) wide.
            assert abs(math.log(d["quantiles"][name] / np.quantile(values, q))) <= WIDTH
        assert d["quantiles"]["p10"] == 0.0  # more than 10 % of units spent nothing
        ys = d["ecdf"]["y"]
        assert ys == sorted(ys)
        assert ys[-1] == pytest.approx(1.0)
        assert ys[0] >= d["zeros"] / d["units"]  # the line starts above the units at 0
    (chart_id, fig), = distribution_figures(section)
    assert chart_id == "chart-distribution-revenue"
    assert fig.layout.xaxis.type == "log"
    assert list(fig.layout.yaxis.range) == [0, 1]


def test_negative_values_keep_a_linear_axis() -> None:
    section = distributions_section(folded({"a": np.array([-5.0, 0.0, 3.0]),
                                            "b": np.array([2.0, 4.0, 0.0])}))  # fmt: skip
    assert section is not None
    ecdf = section["revenue"]["a"]["ecdf"]
    assert ecdf["x"][0] < -4 < 0 < 3 <= ecdf["x"][1]  # -5's bin ends above it, 3's after 3
    assert ecdf["y"] == [pytest.approx(1 / 3), pytest.approx(1.0)]  # the unit at 0 joins at 3
    (_, fig), = distribution_figures(section)
    assert fig.layout.xaxis.type is None


def test_a_phase_without_bins_has_no_section() -> None:
    assert distributions_section({"arms": {}}) is None
