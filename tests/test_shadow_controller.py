"""The shadow phase in the controller, on the rig (real store, fake router and metrics, a clock
the test moves): the mirror in the route plan and no weight to the candidate, a pass, a stop,
a hold on too many unpaired predictions, the phase's deadline either way, the guardrails'
say, and no mirror once the phase is over."""

from __future__ import annotations

import itertools
import random
from typing import Any

from controlplane.rollout import RolloutState
from controlplane.shadow_gate import LOOKS, record_look
from experiments.predictions import Prediction
from tests.controller_rig import Rig, spec_of

RANGE = (0.0, 1.0)


def shadow_doc(**shadow: Any) -> dict[str, Any]:
    doc = spec_of()
    phases = [{"kind": "shadow", "percent": 25, "methods": ["POST"], **shadow},
              *doc["rollout"]["phases"]]  # fmt: skip
    doc["rollout"]["phases"] = phases
    return doc


def pairs(rig: Rig, n: int, *, flip: float = 0.0, only: str | None = None, seed: int = 1) -> None:
    """n requests' predictions from both models (or `only` one of them), at the rig's time."""
    rng = random.Random(seed)
    record = rig.store.get_experiment("ranker")
    batch = []
    for i in range(n):
        score = rng.random()
        label = "yes" if score >= 0.5 else "no"
        flipped = ("no" if label == "yes" else "yes") if rng.random() < flip else label
        for role, lab in (("stable", label), ("candidate", flipped)):
            if only in (None, role):
                batch.append(Prediction(f"r{seed}-{i}", role, rig.clock.now, score, lab))
    rig.store.add_predictions("ranker", record.phase, batch, score_range=RANGE, window_s=60,
                              now=rig.clock.now)  # fmt: skip


def rollout(rig: Rig) -> RolloutState:
    doc = rig.store.get_experiment("ranker").status.rollout
    assert doc is not None
    return RolloutState.from_dict(doc)


def test_the_shadow_phase_mirrors_and_an_identical_candidate_passes(rig: Rig) -> None:
    rig.start(shadow_doc())
    c = rig.controller()
    c.tick()
    plan = rig.router().plans[-1]
    assert rig.router().weights == {"stable": 100}
    assert plan.mirror is not None
    assert (plan.mirror.variant, plan.mirror.percent, plan.mirror.methods) == (
        "candidate", 25, ("POST",))
    assert rig.share() == 0  # nobody is assigned the candidate
    c.tick()
    assert rig.actions() == ["start"]  # no pairs yet: the phase goes on
    pairs(rig, 5000)
    rig.clock.now += 10
    c.tick()
    assert rig.actions() == ["start", "phase"]
    assert rig.router().plans[-1].mirror is None  # the canary: no more mirroring
    assert rig.router().weights == {"stable": 90, "candidate": 10}
    looks = rollout(rig).shadow_looks["items"]
    assert [look["pairs"] for look in looks] == [0, 5000]


def test_a_candidate_whose_labels_differ_is_stopped_and_never_served(rig: Rig) -> None:
    rig.start(shadow_doc())
    c = rig.controller()
    c.tick()
    pairs(rig, 3000, flip=0.05)
    c.tick()
    assert rig.actions() == ["start", "rollback"]
    record = rig.store.get_experiment("ranker")
    assert record.status.outcome == "rolled_back"
    assert "disagreement" in rollout(rig).reason
    assert rig.router().plans[-1].mirror is None
    assert all(p.weight("candidate") == 0 for p in rig.router().plans)


def test_too_many_unpaired_predictions_hold_the_phase(rig: Rig) -> None:
    rig.start(shadow_doc(min_pairs=100, pair_window_s=10))
    c = rig.controller()
    c.tick()
    pairs(rig, 400)
    pairs(rig, 800, only="stable", seed=2)  # the mirror lost most requests
    rig.clock.now += 30  # past the pairing window: they count as unpaired
    c.tick()
    state = rollout(rig)
    assert rig.actions()[-1] == "pause"
    assert state.status.value == "paused"
    assert "unpaired" in state.reason


def test_at_the_deadline_the_phase_does_what_the_plan_says(rig: Rig) -> None:
    rig.start(shadow_doc(max_duration_s=600))
    c = rig.controller()
    c.tick()
    pairs(rig, 50)  # far too few to decide
    rig.clock.now += 599
    c.tick()
    assert rig.actions() == ["start"]
    rig.clock.now += 2
    c.tick()
    assert rig.actions() == ["start", "rollback"]
    assert "undecided" in rollout(rig).reason


def test_at_the_deadline_proceed_moves_on(rig: Rig) -> None:
    rig.start(shadow_doc(max_duration_s=600, on_timeout="proceed"))
    c = rig.controller()
    c.tick()
    rig.clock.now += 601
    c.tick()
    assert rig.actions() == ["start", "phase"]
    assert rig.router().weights == {"stable": 90, "candidate": 10}


def test_a_pass_waits_for_the_guardrails(rig: Rig) -> None:
    rig.start(shadow_doc())
    c = rig.controller()
    c.tick()
    pairs(rig, 5000)
    rig.provider.values["p99_latency_ms"] = None  # no latency data for the mirrored requests
    c.tick()
    assert rig.actions() == ["start"]
    rig.provider.values["p99_latency_ms"] = 500.0  # the candidate is too slow: stopped
    c.tick()
    assert rig.actions() == ["start", "rollback"]


def test_the_looks_stay_few_and_evenly_spread_however_long_the_phase() -> None:
    verdict = {"pairs": 0, "measures": {"d": {"estimate": 0.0, "low": 0.0, "high": 1.0,
                                              "tolerance": 0.1}}}  # fmt: skip
    looks: dict[str, Any] = {}
    for tick in range(5000):
        looks = record_look(looks, float(tick), verdict)
    times = [look["at"] for look in looks["items"]]
    assert LOOKS // 2 <= len(times) <= LOOKS
    gaps = {b - a for a, b in itertools.pairwise(times)}
    assert gaps == {float(looks["stride"])}
    assert times[0] == 0.0
    assert times[-1] > 5000 - looks["stride"] - 1
