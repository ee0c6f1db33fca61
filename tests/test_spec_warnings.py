"""Valid but probably unmeant analysis settings are warned about, with the power they leave:
an n* (the mixture's tuning) below 100 units or above 100× the horizon.  The radius is checked
against analysis.mixture (the kernel decide uses) and the power against scipy and a seeded
simulation of the estimate at the horizon."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from analysis.mixture import mixture, rho2_for
from experiments.spec_metrics import AnalysisSettings, mixture_power
from tests.test_cli import EXAMPLE, abmesh


@pytest.mark.parametrize(
    ("settings", "warned"),
    [
        ({"n_star": 2}, "below 100 units"),
        ({"n_star": 10**9}, "over 100× the horizon's 10000 units"),
        ({"n_star": 2_000_001, "max_units_per_arm": 10_000}, "over 100× the horizon's 20000"),
        ({"n_star": 100}, None),
        ({"n_star": 2_000_000, "max_units_per_arm": 10_000}, None),
        ({}, None),
    ],
)
def test_extreme_n_star_is_warned_about(settings: dict[str, int], warned: str | None) -> None:
    warnings = AnalysisSettings.model_validate(settings).warnings()
    if warned is None:
        assert warnings == []
    else:
        assert len(warnings) == 1
        assert warned in warnings[0]
        assert "power" in warnings[0]


@pytest.mark.parametrize("n_star", [2, 50, 10**9])
def test_the_quoted_power_matches_the_mixture_and_a_simulation(n_star: int) -> None:
    units, alpha, power = 10_000, 0.05, 0.8
    width, tuned, implied = mixture_power(n_star, units, alpha, power)
    # the radius of analysis.mixture for v = 1 (so it is in standard errors)
    for n, expected in ((n_star, width), (units, tuned)):
        _, radius = mixture(0.0, 1.0, rho2_for(n, alpha) * units, 0.0, alpha)
        assert float(radius) == pytest.approx(expected, rel=1e-12)
    delta = tuned + stats.norm.ppf(power)
    reference = stats.norm.sf(width - delta) + stats.norm.cdf(-width - delta)  # both tails
    assert implied == pytest.approx(reference, abs=1e-6)
    # simulation: the estimate at the horizon, in standard errors, under the effect δ
    rng = np.random.default_rng(13)
    estimate = rng.normal(delta, 1.0, 200_000)
    simulated = np.mean(np.abs(estimate) > width)
    assert implied == pytest.approx(simulated, abs=4 * np.sqrt(0.25 / 200_000))
    tuned_power = np.mean(np.abs(estimate) > tuned)
    assert tuned_power == pytest.approx(power, abs=4 * np.sqrt(0.25 / 200_000))


def test_validate_prints_the_warning(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(EXAMPLE.read_text() + "analysis: {n_star: 2}\n")
    proc = abmesh("validate", "-f", str(spec))
    assert "valid" in proc.stdout
    assert "warning: analysis.n_star 2 is below 100 units" in proc.stdout
    assert "warning" not in abmesh("validate", "-f", str(EXAMPLE)).stdout
