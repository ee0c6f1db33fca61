"""Segments read from a store: a harm confined to one country is flagged, marked confined,
and counts for the rollout only when the spec says `segment_harm: rollback`; the Bonferroni
family is fixed by the spec; the answer says why there is nothing for a spec without
segments; the forest chart draws one point per tested segment comparison."""

from __future__ import annotations

import random
from typing import Any

import pytest

from experiments import load_spec
from experiments.folding import Event, FoldPlan
from experiments.report_segments import (
    family_size,
    segment_analysis,
    segments_answer,
    segments_figure,
)
from experiments.reporting import phase_report
from experiments.segments import as_pairs
from experiments.store import Store, open_store

RATES = {("control", "BR"): 0.3, ("treatment", "BR"): 0.15}  # elsewhere 0.3 in both arms


def spec(harm: str, segments: list[Any] | None = None) -> Any:
    variants = [{"key": k, "weight": 50, "header_value": f"g-{k}", "destination": {"host": k}}
                for k in ("control", "treatment")]  # fmt: skip
    return load_spec({
        "name": "by-country", "variants": variants,
        "metrics": {"primary": {"name": "purchase", "kind": "conversion"}},
        "segments": [{"name": "country", "values": ["US", "DE", "BR"]}]
        if segments is None else segments,
        "analysis": {"segment_harm": harm},
    })  # fmt: skip


def fill(store: Store, harm: str) -> None:
    s = spec(harm)
    store.put_experiment(s)
    plan = FoldPlan.from_spec(s)
    rng = random.Random(11)
    exposures, events = {}, []
    for i in range(8000):
        arm = ("control", "treatment")[i % 2]
        country = rng.choices(["US", "DE", "BR"], weights=[5, 3, 2])[0]
        exposures[f"u{i}"] = (arm, 0.0, 1, as_pairs({"country": country}))
        if rng.random() < RATES.get((arm, country), 0.3):
            events.append(Event(f"e{i}", f"u{i}", "purchase", 1.0, 1.0))
    store.record_exposures("by-country", "main", plan, exposures)
    store.ingest_events("by-country", "main", plan, events)


@pytest.mark.parametrize("harm", ["flag", "rollback"])
def test_a_harm_in_one_country_is_flagged_and_acted_on_only_when_asked(
    sqlite_store_url: str, harm: str
) -> None:
    store = open_store(sqlite_store_url)
    fill(store, harm)
    record = store.get_experiment("by-country")
    report = phase_report(store, record)
    analysis = segment_analysis(record, report)
    assert analysis is not None
    flagged = {(f["attribute"], f["value"], f["direction"]) for f in analysis.flagged}
    assert flagged == {("country", "BR", "harm")}
    br = next(s for s in analysis.segments if s.value == "BR")
    (comparison,) = br.comparisons
    assert comparison.harm_confirmed
    assert analysis.harm_for_rollout is (harm == "rollback")
    assert any("BR" in r for r in analysis.reasons)
    answer = segments_answer(record, report)
    assert answer["harm_for_rollout"]["harm"] is (harm == "rollback")
    assert answer["correction"]["rollout_family"] == 4  # US, DE, BR and (other), 1 arm
    fig = segments_figure(answer, "purchase")
    points = sum(len(trace.y) for trace in fig.data)
    assert points == 3  # one per tested segment: (other) is empty
    harm_trace = next(t for t in fig.data if t.name == "flagged: harm")
    assert list(harm_trace.y) == ["country=BR · treatment"]
    store.close()


def test_the_family_is_fixed_by_the_spec() -> None:
    s = spec("flag", ["country", {"name": "platform", "values": ["ios", "web"]}])
    # country: cap 20 + (other); platform: 2 declared + (other)
    assert family_size(s, {}) == 21 + 3
    many = {"country": {str(i): {} for i in range(40)}}  # several partitions, each capping
    assert family_size(s, many) == 40


def test_a_spec_without_segments_says_so(sqlite_store_url: str) -> None:
    store = open_store(sqlite_store_url)
    store.put_experiment(spec("flag", []))
    record = store.get_experiment("by-country")
    answer = segments_answer(record, phase_report(store, record))
    assert answer["segments"] == []
    assert answer["note"] == "the spec declares no segments"
    store.close()
