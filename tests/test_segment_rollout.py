"""A harm confined to one segment, in an A/B phase: with `analysis.segment_harm: rollback` the
controller rolls the rollout back and the verdict endpoints answer rollback, naming the
segment; with the default `flag` the rollout goes on (the whole population shows no harm)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from experiments.folding import Event, FoldPlan
from experiments.segments import as_pairs
from experiments.spec import ExperimentSpec
from experiments.status import Outcome
from experiments.verdict import current_verdict
from tests.controller_rig import Rig, spec_of

# Candidate conversion per country: worse in BR (30 % of units), a little better elsewhere,
# so the whole population shows no difference.
CANDIDATE = {"BR": 0.15, "US": 0.36}
STABLE = 0.30


@pytest.fixture
def rig(sqlite_store_url: str, tmp_path: Path) -> Rig:
    return Rig(sqlite_store_url, tmp_path)


def start(rig: Rig, harm: str) -> ExperimentSpec:
    doc: dict[str, Any] = spec_of()
    doc["rollout"]["phases"] = [{"kind": "ab", "split": 50}, {"kind": "promote"}]
    doc["segments"] = [{"name": "country", "values": ["US", "BR"]}]
    doc["analysis"] = {"segment_harm": harm}
    return rig.start(doc)


def feed(rig: Rig, spec: ExperimentSpec, phase: str, units: int = 8000) -> None:
    plan, rng = FoldPlan.from_spec(spec), random.Random(5)
    exposures, clicks = {}, []
    for i in range(units):
        arm = "stable" if i % 2 else "candidate"
        country = "BR" if rng.random() < 0.3 else "US"
        exposures[f"u{i}"] = (arm, 1.0, 1, as_pairs({"country": country}))
        rate = STABLE if arm == "stable" else CANDIDATE[country]
        if rng.random() < rate:
            clicks.append(Event(f"e{i}", f"u{i}", "click", 1.0, 2.0))
    rig.store.record_exposures(spec.name, phase, plan, exposures)
    rig.store.ingest_events(spec.name, phase, plan, clicks)


@pytest.mark.parametrize("harm", ["rollback", "flag"])
def test_a_confined_harm_rolls_back_only_when_the_spec_says_so(rig: Rig, harm: str) -> None:
    spec = start(rig, harm)
    c = rig.controller()
    c.tick()
    assert rig.store.get_experiment("ranker").phase == "ab-1"
    feed(rig, spec, "ab-1")
    verdict = current_verdict(rig.store, "ranker", None)
    for _ in range(3):
        c.tick()
    record = rig.store.get_experiment("ranker")
    if harm == "rollback":
        assert verdict["decision"] == "rollback"
        assert verdict["reasons"][0].startswith("harm in a segment: country=BR: candidate harms")
        assert record.status.outcome is Outcome.ROLLED_BACK
        assert "country=BR" in rig.store.audit(record.uid)[-1]["what"]
        assert rig.router().weights == {"stable": 100}
    else:
        assert verdict["decision"] == "continue"
        assert record.status.outcome is None
        assert rig.share() == 50
