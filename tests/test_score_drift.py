"""The score-drift guardrail: the arms' own-traffic score CDFs compared with two time-uniform
DKW bands.  Checked against scipy's two-sample KS statistic, by fixed-seed simulation (false
alarms of identical models over many looks stay under α; a real shift is caught), and in the
controller (rig): a drifting candidate is rolled back mid-canary, an identical one walks on."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy import stats

from analysis.score_drift import score_drift
from experiments.predictions import Prediction
from experiments.shadow_sums import BINS, ShadowSums
from tests.controller_rig import Rig, spec_of


def sums_of(stable: np.ndarray, candidate: np.ndarray) -> ShadowSums:
    sums = ShadowSums()
    for arm, scores in (("stable", stable), ("candidate", candidate)):
        for s in scores:
            sums.add_score(arm, float(s))
    return sums


def test_the_distance_is_the_two_sample_ks_statistic_within_a_bin() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.beta(2, 5, 3000), rng.beta(2.4, 5, 1700)
    m = score_drift(sums_of(a, b), tolerance=0.1, alpha=0.05, min_each=1)
    ks = stats.ks_2samp(a, b).statistic
    assert m.estimate is not None
    assert m.estimate <= ks + 1e-12
    assert ks - m.estimate <= max(np.histogram(a, BINS)[0].max() / 3000,
                                  np.histogram(b, BINS)[0].max() / 1700) + 1e-12  # fmt: skip


def test_identical_models_raise_no_false_alarm_at_any_look() -> None:
    """500 runs, a look every 100 predictions per arm (the candidate gets a third as many, as
    in a canary) up to 6,000: the share of runs ever shown over a 0.05 tolerance is ≤ α."""
    rng, alpha, alarms = np.random.default_rng(11), 0.05, 0
    for _ in range(500):
        hist = {"stable": np.zeros(BINS + 2, int), "candidate": np.zeros(BINS + 2, int)}
        for _look in range(60):
            for arm, n in (("stable", 100), ("candidate", 34)):
                bins = 1 + (rng.beta(2, 5, n) * BINS).astype(int)  # ShadowSums.bin_of on [0, 1)
                np.add.at(hist[arm], bins, 1)
            sums = ShadowSums(traffic={arm: h.tolist() for arm, h in hist.items()})
            if score_drift(sums, 0.05, alpha, min_each=1).state == "violated":
                alarms += 1
                break
    assert alarms / 500 <= alpha


def test_a_shifted_candidate_is_caught_and_an_identical_one_shown_within() -> None:
    rng = np.random.default_rng(5)
    moved = np.clip(rng.beta(2, 5, 4000) + 0.15, 0, 0.999)
    shifted = score_drift(sums_of(rng.beta(2, 5, 4000), moved), 0.1, 0.01, 200)
    assert shifted.state == "violated"
    same = score_drift(sums_of(rng.beta(2, 5, 20000), rng.beta(2, 5, 20000)), 0.1, 0.01, 200)
    assert same.state == "within"
    few = score_drift(sums_of(rng.beta(2, 5, 150), rng.beta(2, 5, 5000)), 0.1, 0.01, 200)
    assert few.state == "not measured"


def drift_doc() -> dict[str, object]:
    doc = spec_of(steps=(10, 50))
    doc["rollout"]["score_drift"] = {"tolerance": 0.1, "alpha": 0.01, "min_predictions": 200}
    return doc


def predict(rig: Rig, n: int, shift: float, seed: int) -> None:
    """Each arm's predictions on its own requests (no pairs)."""
    rng = random.Random(seed)
    record = rig.store.get_experiment("ranker")
    batch = []
    for i in range(n):
        batch.append(Prediction(f"s{seed}-{i}", "stable", rig.clock.now, rng.betavariate(2, 5)))
        score = min(0.999, rng.betavariate(2, 5) + shift)
        batch.append(Prediction(f"c{seed}-{i}", "candidate", rig.clock.now, score))
    rig.store.add_predictions("ranker", record.phase, batch, score_range=(0.0, 1.0),
                              window_s=60, now=rig.clock.now)  # fmt: skip


@pytest.mark.parametrize(("shift", "actions"), [
    (0.2, ["start", "rollback"]), (0.0, ["start", "step", "phase"]),
])  # fmt: skip
def test_the_controller_rolls_back_a_drifting_candidate(
    rig: Rig, shift: float, actions: list[str]
) -> None:
    rig.start(drift_doc())
    c = rig.controller()
    c.tick()
    predict(rig, 3000, shift, seed=1)
    c.tick()
    c.tick()
    assert rig.actions() == actions
    entry = rig.store.audit(rig.store.get_experiment("ranker").uid)[-1]
    reading = next(g for g in entry["guardrails"] if g["name"] == "score_drift")
    assert reading["status"] == ("fail" if shift else "pass")
    if shift:
        assert reading["value"] > 0.3
    else:
        assert reading["value"] < 0.06
