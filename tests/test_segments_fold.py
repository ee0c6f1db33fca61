"""Segments and value distributions in the folded statistics, on every store: each cell
(arm × attribute value) holds exactly the sums of its units' values, computed here directly
from the generated data; a unit's segment value is its exposure's, else the first an event
carries, whichever is logged first; values beyond the declared list or the cap count as
`(other)`; the distribution bins count the units' non-zero values."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import numpy as np
import pytest

from experiments import load_spec
from experiments.distributions import PER_DECADE, edges, quantile
from experiments.folding import Event, FoldPlan
from experiments.reporting import phase_report
from experiments.segments import as_pairs
from experiments.spec import ExperimentSpec
from experiments.store import Store
from experiments.store.logfold import as_exposures

NOW = 1_800_000_000.0
COUNTRIES = ("US", "DE", "FR", "JP")  # JP is not declared: it counts as (other)
PLATFORMS = ("ios", "android", "web")


def spec(segments: list[Any]) -> ExperimentSpec:
    variants = [
        {"key": k, "weight": 50, "header_value": f"group-{k}", "destination": {"host": k}}
        for k in ("control", "treatment")
    ]
    metrics = {"primary": {"name": "purchase", "kind": "conversion"},
               "secondary": [{"name": "revenue", "kind": "sum"}]}  # fmt: skip
    return load_spec({"name": "segmented", "variants": variants, "metrics": metrics,
                      "segments": segments})  # fmt: skip


def start(store: Store, s: ExperimentSpec) -> FoldPlan:
    store.put_experiment(s)
    return FoldPlan.from_spec(s)


def test_cells_hold_the_sums_of_their_units(store: Store) -> None:
    s = spec([{"name": "country", "values": ["US", "DE", "FR"]}, "platform"])
    plan = start(store, s)
    rng = random.Random(7)
    units = [f"u{i}" for i in range(400)]
    arm = {u: rng.choice(("control", "treatment")) for u in units}
    truth: dict[str, dict[str, str]] = {u: {} for u in units}
    exposures: dict[str, tuple[Any, ...]] = {}
    for u in units:
        given = {}
        if rng.random() < 0.5:  # half say their segments when exposed
            given = {"country": rng.choice(COUNTRIES), "platform": rng.choice(PLATFORMS)}
            truth[u] = dict(given)
        exposures[u] = (arm[u], NOW, 1, as_pairs(given))
    events, values = [], {u: {"purchase": 0.0, "revenue": 0.0} for u in units}
    for i in range(1500):
        u = rng.choice(units)
        metric = rng.choice(("purchase", "revenue"))
        value = round(rng.lognormvariate(2, 1), 2) if metric == "revenue" else 1.0
        given = {"country": rng.choice(COUNTRIES)} if rng.random() < 0.3 else {}
        for attribute, v in given.items():  # the first value logged for the unit stays
            truth[u].setdefault(attribute, v)
        values[u][metric] = 1.0 if metric == "purchase" else values[u][metric] + value
        events.append(Event(f"e{i}", u, metric, value, NOW + 1, as_pairs(given)))
    # Half the events are logged before the exposures (events are appended at once, exposures
    # buffered), half after, in batches that split units' events.
    half = len(events) // 2
    for chunk in range(0, half, 97):
        store.append_events("segmented", "main", plan, events[chunk : min(chunk + 97, half)])
    store.append_exposures("segmented", "main", plan, as_exposures(exposures))
    for chunk in range(half, len(events), 97):
        store.append_events("segmented", "main", plan, events[chunk : chunk + 97])
    store.settle("segmented", timeout=60)
    record = store.get_experiment("segmented")
    report = phase_report(store, record, "main")
    cells = report["segments"]
    assert set(cells) == {"country", "platform"}
    expected_cells = 0
    for attribute, resolved in (("country", lambda v: v if v != "JP" else "(other)"),
                                ("platform", lambda v: v)):  # fmt: skip
        for value in sorted({resolved(t[attribute]) for t in truth.values() if attribute in t}):
            for variant in ("control", "treatment"):
                members = [u for u in units if arm[u] == variant
                           and resolved(truth[u].get(attribute, "")) == value]  # fmt: skip
                if not members:
                    continue
                expected_cells += 1
                got = cells[attribute][value][variant]
                assert got["exposures"] == len(members)
                revenue = np.array([values[u]["revenue"] for u in members])
                r = got["metrics"]["revenue"]
                assert r["sum"] == pytest.approx(revenue.sum(), rel=1e-12)
                assert r["m2"] == pytest.approx(((revenue - revenue.mean()) ** 2).sum(), rel=1e-9)
                assert got["metrics"]["purchase"]["sum"] == sum(values[u]["purchase"]
                                                                 for u in members)  # fmt: skip
    assert expected_cells == sum(len(arms) for vs in cells.values() for arms in vs.values())
    # The arms are what they were without segments: every unit, once.
    assert {v: a["exposures"] for v, a in report["arms"].items()} == dict(Counter(arm.values()))
    dist = report["distributions"]["revenue"]
    for variant in ("control", "treatment"):
        revenue = np.array([values[u]["revenue"] for u in units if arm[u] == variant])
        got = dist[variant]
        assert got["units"] == len(revenue)
        assert got["zeros"] == int((revenue == 0).sum())
        # Each unit's value lies in the bin it is counted in.
        k = np.floor(np.log10(revenue[revenue > 0]) * PER_DECADE).astype(int)
        assert [[*edges(f"p{b}"), c] for b, c in sorted(Counter(k.tolist()).items())] == got["bins"]
        median = quantile(got, 0.5)
        assert median is not None
        assert abs(math.log(median / float(np.median(revenue)))) < math.log(10 ** (1 / PER_DECADE))


def test_values_beyond_the_cap_count_as_other(sqlite_store_url: str) -> None:
    from experiments.store import open_store

    store = open_store(sqlite_store_url)  # one partition: which values come first is the order
    plan = start(store, spec([{"name": "bucket", "max_values": 3}]))
    exposures = {f"u{i}": ("control" if i % 2 else "treatment", NOW, 1, (("bucket", f"b{i}"),))
                 for i in range(6)}  # fmt: skip
    for unit, value in exposures.items():  # one at a time: b0, b1, b2 are the first three
        store.record_exposures("segmented", "main", plan, {unit: value})
    cells = phase_report(store, store.get_experiment("segmented"), "main")["segments"]["bucket"]
    assert sorted(cells) == ["(other)", "b0", "b1", "b2"]
    assert sum(a["exposures"] for a in cells["(other)"].values()) == 3
    store.close()


def test_an_unknown_attribute_in_the_log_is_ignored(store: Store) -> None:
    plan = start(store, spec(["platform"]))
    store.record_exposures("segmented", "main", plan,
                           {"u1": ("control", NOW, 1, (("colour", "red"), ("platform", "ios")))})
    report = phase_report(store, store.get_experiment("segmented"), "main")
    assert list(report["segments"]) == ["platform"]
    assert report["arms"]["control"]["exposures"] == 1


def test_a_store_of_schema_5_gains_the_segments_column_and_keeps_its_log(tmp_path: Any) -> None:
    """Logs written before segments existed fold as before; new entries carry segments."""
    import sqlite3

    from experiments.store import open_store

    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    store = open_store(url)
    plan = start(store, spec(["platform"]))
    store.append_exposures("segmented", "main", plan, as_exposures({"old": ("control", NOW)}))
    store.close()
    db = sqlite3.connect(path)  # back to schema 5: the logs without their segments column
    db.executescript("ALTER TABLE exposure_log DROP COLUMN segments;"
                     " ALTER TABLE event_log DROP COLUMN segments; PRAGMA user_version = 5;")
    db.close()
    store = open_store(url)
    store.record_exposures("segmented", "main", plan,
                           {"new": ("control", NOW, 1, (("platform", "ios"),))})  # fmt: skip
    report = phase_report(store, store.get_experiment("segmented"), "main")
    assert report["arms"]["control"]["exposures"] == 2  # the old unit and the new one
    assert report["segments"]["platform"]["ios"]["control"]["exposures"] == 1
    store.close()
