"""One contract, every backend: the same tests run against SQLite and a real Redis server."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import pytest

from assignment import Reason, assign, assign_many
from controlplane.lifecycle import Action, change_state, start_phase
from experiments import ExperimentSpec, load_spec
from experiments.errors import ConflictError, NotFoundError, StoreError
from experiments.folding import FoldPlan, exposures_of
from experiments.status import State
from experiments.store import DEFAULT_PHASE, StickyStore, Store, open_store


def make_spec(
    name: str = "ranker-v2", weights: tuple[float, float] = (50, 50), **extra: Any
) -> ExperimentSpec:
    return load_spec(
        {
            "name": name,
            **extra,
            "variants": [
                {
                    "key": "control",
                    "header_value": "group-a",
                    "weight": weights[0],
                    "destination": {"host": "model-v1"},
                },
                {
                    "key": "treatment",
                    "header_value": "group-b",
                    "weight": weights[1],
                    "destination": {"host": "model-v2"},
                },
            ],
        }
    )


def test_implements_the_protocols(store: Store) -> None:
    assert isinstance(store, Store)
    assert isinstance(store, StickyStore)
    store.ping()


def test_create_read_list(store: Store) -> None:
    result = store.put_experiment(make_spec())
    assert result.changed
    assert (result.record.revision, result.record.state) == (1, State.DRAFT)
    assert store.get_experiment("ranker-v2").spec == make_spec()
    store.put_experiment(make_spec("another"))
    assert [r.name for r in store.list_experiments()] == ["another", "ranker-v2"]


def test_identical_put_is_a_no_op(store: Store) -> None:
    first = store.put_experiment(make_spec())
    epoch = store.config_epoch()
    again = store.put_experiment(make_spec())
    assert not again.changed
    assert again.record.revision == first.record.revision == 1
    assert store.config_epoch() == epoch


def test_changes_make_revisions_and_history(store: Store) -> None:
    store.put_experiment(make_spec(weights=(95, 5)))
    store.put_experiment(make_spec(weights=(80, 20)))
    third = store.put_experiment(make_spec(weights=(50, 50)))
    assert third.record.revision == 3
    history = store.experiment_history("ranker-v2")
    assert [r.revision for r in history] == [1, 2, 3]
    assert [r.spec.variants[1].weight for r in history] == [5, 20, 50]
    old = store.get_experiment("ranker-v2", revision=1)
    assert (old.revision, old.spec.variants[1].weight) == (1, 5)
    assert store.get_experiment("ranker-v2").spec.variants[1].weight == 50
    with pytest.raises(NotFoundError, match="revision 9"):
        store.get_experiment("ranker-v2", revision=9)


def test_status_changes(store: Store) -> None:
    created = store.put_experiment(make_spec()).record
    epoch = store.config_epoch()
    record = store.commit_status(
        "ranker-v2", replace(created.status, state=State.RUNNING), expected_version=1
    )
    assert (record.state, record.status.version) == (State.RUNNING, 2)
    assert store.get_experiment("ranker-v2").state is State.RUNNING
    assert store.config_epoch() > epoch
    store.put_experiment(make_spec(weights=(90, 10)))
    assert store.get_experiment("ranker-v2").state is State.RUNNING  # kept
    with pytest.raises(NotFoundError):
        store.commit_status(
            "missing", replace(created.status, state=State.PAUSED), expected_version=2
        )


def test_missing_experiment(store: Store) -> None:
    for call in (
        lambda: store.get_experiment("missing"),
        lambda: store.experiment_history("missing"),
        lambda: store.delete_experiment("missing"),
    ):
        with pytest.raises(NotFoundError, match="'missing' does not exist"):
            call()


def test_delete_removes_revisions_and_sticky_records(store: Store) -> None:
    store.put_experiment(make_spec(sticky=True))
    store.put_sticky("ranker-v2", "ranker-v2", {"u1": "treatment"})
    store.put_sticky("other", "other", {"u1": "control"})
    store.delete_experiment("ranker-v2")
    assert store.list_experiments() == []
    assert store.get_sticky("ranker-v2", "ranker-v2", ["u1"]) == {}
    assert store.get_sticky("other", "other", ["u1"]) == {"u1": "control"}
    assert store.put_experiment(make_spec()).record.revision == 1  # a fresh start


def test_config_epoch_grows_on_every_write(store: Store) -> None:
    seen = [store.config_epoch()]
    store.put_experiment(make_spec())
    seen.append(store.config_epoch())
    change_state(store, "ranker-v2", Action.START)
    seen.append(store.config_epoch())
    store.delete_experiment("ranker-v2")
    seen.append(store.config_epoch())
    assert seen == sorted(set(seen))


def test_overlapping_layer_slices_are_refused(store: Store) -> None:
    store.put_experiment(make_spec("a", layer={"name": "ranking", "start": 0, "end": 50}))
    store.put_experiment(make_spec("b", layer={"name": "ranking", "start": 50, "end": 100}))
    store.put_experiment(make_spec("c", layer={"name": "other", "start": 0, "end": 100}))
    with pytest.raises(
        ConflictError, match=r"\[40, 60\) of 'd' overlaps \[0, 50\) of 'a' and \[50, 100\) of 'b'"
    ):
        store.put_experiment(make_spec("d", layer={"name": "ranking", "start": 40, "end": 60}))
    with pytest.raises(ConflictError, match="'a'"):
        store.put_experiment(make_spec("b", layer={"name": "ranking", "start": 45, "end": 100}))
    assert [r.name for r in store.list_experiments()] == ["a", "b", "c"]  # nothing half-written
    assert store.get_experiment("b").revision == 1
    # Moving an experiment within its own slice is fine.
    store.put_experiment(make_spec("b", layer={"name": "ranking", "start": 60, "end": 100}))


def test_sticky_first_writer_wins(store: Store) -> None:
    assert store.get_sticky("e", "s", ["u1", "u2"]) == {}
    assert store.put_sticky("e", "s", {"u1": "treatment"}) == {"u1": "treatment"}
    assert store.put_sticky("e", "s", {"u1": "control", "u2": "control"}) == {
        "u1": "treatment",
        "u2": "control",
    }
    assert store.get_sticky("e", "s", ["u1", "u2", "u3"]) == {"u1": "treatment", "u2": "control"}
    assert store.get_sticky("e", "other-salt", ["u1"]) == {}
    many = {f"unit-{i}": "control" for i in range(2500)}  # more than one SQL parameter batch
    assert store.put_sticky("e", "s", many) == many
    assert store.get_sticky("e", "s", list(many)) == many


def test_concurrent_sticky_writers_agree(store_url: str) -> None:
    # Two clients race to record the same units with different variants: each unit ends up
    # with exactly one variant, and both clients are told the same one.
    stores = [open_store(store_url), open_store(store_url)]
    start = threading.Barrier(2)
    for round_ in range(5):
        units = [f"r{round_}-u{i}" for i in range(300)]
        answers: dict[str, dict[str, str]] = {}

        def write(
            index: int,
            variant: str,
            units: list[str] = units,
            answers: dict[str, dict[str, str]] = answers,
        ) -> None:
            start.wait()  # both writers go at once
            answers[variant] = stores[index].put_sticky("e", "s", dict.fromkeys(units, variant))

        threads = [
            threading.Thread(target=write, args=(i, v))
            for i, v in enumerate(("control", "treatment"))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers["control"] == answers["treatment"]
        assert answers["control"] == stores[0].get_sticky("e", "s", units)
    for st in stores:
        st.close()


def test_sticky_assignment_survives_weight_changes(store: Store) -> None:
    units = [f"user-{i}" for i in range(2000)]
    spec = make_spec(sticky=True, weights=(50, 50))
    first = assign_many(spec, units, sticky=store)
    assert all(a.reason is Reason.HASH for a in first)
    # Shrinking the candidate would move half its units back to control without the records.
    shrunk = make_spec(sticky=True, weights=(90, 10))
    assert assign_many(shrunk, units) != first
    again = assign_many(shrunk, units, sticky=store)
    assert [a.variant for a in again] == [a.variant for a in first]
    assert {a.reason for a in again} == {Reason.STICKY}
    # A scalar assignment reads the same records; a new unit is recorded on first sight.
    assert assign(shrunk, units[7], sticky=store).variant == first[7].variant
    fresh = assign(shrunk, "newcomer", sticky=store)
    assert store.get_sticky("ranker-v2", "ranker-v2", ["newcomer"]) == {"newcomer": fresh.variant}


def test_sticky_records_only_randomised_units(store: Store) -> None:
    spec = make_spec(
        sticky=True, coverage=0.5, overrides=[{"units": ["qa-1"], "variant": "treatment"}]
    )
    results = assign_many(spec, ["qa-1", *[f"u{i}" for i in range(200)]], sticky=store)
    recorded = store.get_sticky("ranker-v2", "ranker-v2", [f"u{i}" for i in range(200)] + ["qa-1"])
    assert set(recorded) == {f"u{i}" for i, a in enumerate(results[1:]) if a.in_experiment}
    assert 0 < len(recorded) < 200


def test_a_new_salt_re_randomises(store: Store) -> None:
    units = [f"user-{i}" for i in range(500)]
    assign_many(make_spec(sticky=True), units, sticky=store)
    resalted = make_spec(sticky=True, salt="phase-2")
    results = assign_many(resalted, units, sticky=store)
    assert {a.reason for a in results} == {Reason.HASH}


def test_unknown_store_urls_are_refused() -> None:
    for url in (
        "postgres://x",
        "nonsense",
        "sqlite://relative.db",
        "redis://h/0?prefix=a b",
        "redis://h/0?colour=red",
    ):
        with pytest.raises(StoreError, match="store URL"):
            open_store(url)


def test_unreachable_redis_is_a_store_error() -> None:
    st = open_store("redis://127.0.0.1:9/0")
    with pytest.raises(StoreError, match="Redis store"):
        st.ping()
    with pytest.raises(StoreError):
        st.list_experiments()


def test_status_change_with_expected_refuses_a_stale_view(store: Store) -> None:
    draft = store.put_experiment(make_spec()).record
    stale = draft.status.version
    store.commit_status(
        "ranker-v2", replace(draft.status, state=State.RUNNING), expected_version=stale
    )
    with pytest.raises(ConflictError, match=f"is at version {stale + 1}, not {stale}"):
        store.commit_status(
            "ranker-v2", replace(draft.status, state=State.CONCLUDED), expected_version=stale
        )
    assert store.get_experiment("ranker-v2").state is State.RUNNING


PLAN = FoldPlan.from_spec(make_spec())


def counts(store: Store, experiment: str, phase: str = DEFAULT_PHASE) -> dict[str, int]:
    return exposures_of(store.phase_stats(experiment, phase)[0])


def test_first_exposure_counts_once(store: Store) -> None:
    assert counts(store, "e") == {}
    new = store.record_exposures(
        "e", "main", PLAN, {"u1": ("control", 1.0), "u2": ("treatment", 2.0)}
    )
    assert new == 2
    # A repeat (even claiming another variant) and a new unit: only the new unit counts.
    again = store.record_exposures(
        "e", "main", PLAN, {"u1": ("treatment", 3.0), "u3": ("control", 4.0)}
    )
    assert again == 1
    assert counts(store, "e") == {"control": 2, "treatment": 1}
    assert counts(store, "other") == {}
    assert counts(store, "e", "next") == {}  # a new phase starts from zero
    assert store.phases("e") == ["main"]


def test_many_exposures_in_one_call(store: Store) -> None:
    batch = {f"u{i}": ("treatment" if i % 4 == 0 else "control", float(i)) for i in range(5000)}
    assert store.record_exposures("e", "main", PLAN, batch) == 5000
    assert store.record_exposures("e", "main", PLAN, batch) == 0
    assert counts(store, "e") == {"treatment": 1250, "control": 3750}


def test_delete_removes_exposures(store: Store) -> None:
    store.put_experiment(make_spec())
    store.record_exposures("ranker-v2", "main", PLAN, {"u1": ("control", 1.0)})
    store.delete_experiment("ranker-v2")
    assert counts(store, "ranker-v2") == {}
    assert store.phases("ranker-v2") == []


def test_sticky_record_of_a_removed_variant_is_replaced(store: Store) -> None:
    store.put_sticky("e", "s", {"u1": "gone", "u2": "control"})
    out = store.put_sticky(
        "e", "s", {"u1": "treatment", "u2": "treatment"}, current={"control", "treatment"}
    )
    assert out == {"u1": "treatment", "u2": "control"}
    assert store.get_sticky("e", "s", ["u1", "u2"]) == {"u1": "treatment", "u2": "control"}


def test_units_of_a_removed_variant_stay_sticky_in_their_new_arm(store: Store) -> None:
    def three(weights: tuple[float, ...]) -> ExperimentSpec:
        keys = ["a", "b", "c"][: len(weights)]
        return load_spec(
            {
                "name": "e",
                "sticky": True,
                "variants": [
                    {"key": k, "header_value": k, "weight": w, "destination": {"host": "m"}}
                    for k, w in zip(keys, weights, strict=True)
                ],
            }
        )

    units = [f"u{i}" for i in range(600)]
    first = assign_many(three((34, 33, 33)), units, sticky=store)
    moved = [u for u, a in zip(units, first, strict=True) if a.variant == "c"]
    assert moved
    second = dict(zip(units, assign_many(three((50, 50)), units, sticky=store), strict=True))
    assert {second[u].reason for u in moved} == {Reason.HASH}
    third = dict(zip(units, assign_many(three((90, 10)), units, sticky=store), strict=True))
    assert all(third[u].variant == second[u].variant for u in units)
    assert {a.reason for a in third.values()} == {Reason.STICKY}


def test_a_used_phase_name_cannot_come_back(store: Store) -> None:
    store.put_experiment(make_spec())
    store.record_exposures("ranker-v2", "main", PLAN, {"u1": ("control", 1.0)})
    assert start_phase(store, "ranker-v2", "ab").phase == "ab"
    assert start_phase(store, "ranker-v2", "ab").phase == "ab"  # staying put is fine
    with pytest.raises(ConflictError, match="used phase 'main' before"):
        start_phase(store, "ranker-v2", "main")
    assert store.phase_plan("ranker-v2", "main") == PLAN
    assert store.phase_plan("ranker-v2", "ab") is None  # no data yet


def test_raw_events_page_by_cursor(store: Store) -> None:
    from experiments.folding import Event

    store.put_experiment(make_spec())
    for batch in range(3):  # each batch shares one receive time
        store.ingest_events(
            "ranker-v2",
            "main",
            PLAN,
            [Event(f"b{batch}-e{i}", f"u{i}", "click", 1.0, 0.0) for i in range(10)],
        )
    seen: list[str] = []
    since, after = 0.0, None
    while True:
        page = store.raw_events("ranker-v2", since=since, after=after, limit=7)
        seen += [e["event_id"] for e in page]
        if len(page) < 7:
            break
        since, after = page[-1]["received_at"], page[-1]["event_id"]
    assert sorted(seen) == sorted(f"b{b}-e{i}" for b in range(3) for i in range(10))
    assert len(seen) == len(set(seen))
    assert store.purge_events(received_before=time.time() + 1) == 30
    assert store.raw_events("ranker-v2") == []


def test_raw_exposures_carry_the_first_exposures_segments_before_any_fold(store: Store) -> None:
    from experiments.foldbatch import Exposure

    store.put_experiment(make_spec())
    first = [
        Exposure("u1", "control", 1.0, 1, (("country", "DE"),)),
        Exposure("u2", "treatment", 2.0, 1),
    ]
    store.append_exposures("ranker-v2", "main", PLAN, first)
    # a later exposure of u1 with other values changes nothing: the first one counts
    store.append_exposures(
        "ranker-v2", "main", PLAN, [Exposure("u1", "control", 3.0, 1, (("country", "FR"),))]
    )
    expected = [
        {
            "unit": "u1",
            "variant": "control",
            "at": 1.0,
            "generation": 1,
            "segments": {"country": "DE"},
        },
        {"unit": "u2", "variant": "treatment", "at": 2.0, "generation": 1, "segments": {}},
    ]
    assert store.raw_exposures("ranker-v2", "main") == expected  # not folded yet
    store.settle("ranker-v2")
    assert store.raw_exposures("ranker-v2", "main") == expected
    assert store.raw_exposures("ranker-v2", "main", after="u1") == expected[1:]
