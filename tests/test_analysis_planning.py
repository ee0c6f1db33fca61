"""Sample size, power and multiple-testing corrections against statsmodels and hand values."""

from __future__ import annotations

import math

import pytest
from statsmodels.stats import power as sm_power
from statsmodels.stats import proportion as sm_proportion

from analysis import adjust_pvalues, power, sample_size


@pytest.mark.parametrize(
    ("mde", "sd", "ratio"), [(0.1, 1.0, 1.0), (2.5, 30.0, 1.0), (0.05, 1.0, 2.0)]
)
def test_sample_size_for_means_matches_statsmodels(mde: float, sd: float, ratio: float) -> None:
    n = sample_size(mde=mde, sd=sd, ratio=ratio)
    ref = sm_power.NormalIndPower().solve_power(
        effect_size=mde / sd, alpha=0.05, power=0.8, ratio=ratio
    )
    # statsmodels also counts the far rejection tail: its n is a hair smaller.
    assert n == math.ceil(ref) or n == math.ceil(ref) + 1
    assert power(n=n, mde=mde, sd=sd, ratio=ratio) >= 0.8
    assert power(n=n - 2, mde=mde, sd=sd, ratio=ratio) < 0.8
    got = power(n=1000, mde=mde, sd=sd, ratio=ratio)
    ref_power = sm_power.NormalIndPower().power(
        effect_size=mde / sd, nobs1=1000, alpha=0.05, ratio=ratio
    )
    assert got == pytest.approx(ref_power, rel=1e-10)


@pytest.mark.parametrize(("baseline", "mde"), [(0.10, 0.01), (0.02, 0.002), (0.5, -0.05)])
def test_sample_size_for_proportions_matches_statsmodels(baseline: float, mde: float) -> None:
    n = sample_size(mde=mde, baseline=baseline)
    ref = sm_proportion.samplesize_proportions_2indep_onetail(
        diff=mde, prop2=baseline, power=0.8, alpha=0.05
    )
    assert n == math.ceil(ref)


def test_sample_size_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="not both"):
        sample_size(mde=0.1, sd=1.0, baseline=0.1)
    with pytest.raises(ValueError, match="rates in"):
        sample_size(mde=0.2, baseline=0.9)
    with pytest.raises(ValueError, match="non-zero"):
        sample_size(mde=0.0, sd=1.0)


def test_holm_and_bh_by_hand() -> None:
    pvalues = [0.01, 0.04, 0.03, math.nan]
    # Holm: sorted 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 → running max 0.06.
    assert adjust_pvalues(pvalues, method="holm")[:3] == pytest.approx([0.03, 0.06, 0.06])
    # BH: 0.04·3/3 = 0.04, 0.03·3/2 = 0.045 → min from the top 0.04, 0.01·3 = 0.03.
    assert adjust_pvalues(pvalues, method="bh")[:3] == pytest.approx([0.03, 0.04, 0.04])
    assert math.isnan(adjust_pvalues(pvalues, method="bh")[3])  # no information stays nan
    with pytest.raises(ValueError, match="method"):
        adjust_pvalues([0.1], method="bonferroni")  # type: ignore[arg-type]
