"""The looks history's part of the store contract, on SQLite, a real Redis server and a real
Redis Cluster: append-only per uid and phase, a phase's last look read alone, a repeat of the
phase's last data skipped, a hard cap per phase, two writers at once, delete (or keep) with the
experiment, and an SQLite store of schema 6 migrated in place."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from experiments.loader import load_spec
from experiments.store import Store, open_store

SPEC = load_spec(
    {
        "name": "exp",
        "variants": [
            {"key": "a", "header_value": "group-a", "weight": 50, "destination": {"host": "m"}},
            {"key": "b", "header_value": "group-b", "weight": 50, "destination": {"host": "m"}},
        ],
    }
)


def look(phase: str, number: int, **extra: Any) -> dict[str, Any]:
    return {"phase": phase, "look": number, "status": "continue", **extra}


def test_looks_are_kept_per_phase_oldest_first(store: Store) -> None:
    assert store.looks("uid-1") == []
    for i, phase in enumerate(["main", "main", "ab-1", "main", "ab-1"], start=1):
        assert store.append_look("uid-1", look(phase, i), fingerprint=f"f{i}", cap=10)
    assert [x["look"] for x in store.looks("uid-1", "main")] == [1, 2, 4]
    assert [x["look"] for x in store.looks("uid-1", "ab-1")] == [3, 5]
    assert [x["look"] for x in store.looks("uid-1")] == [1, 2, 3, 4, 5]
    assert store.looks("uid-1", "none") == []
    assert store.looks("uid-2") == []


def test_a_phase_s_last_look_is_read_alone(store: Store) -> None:
    assert store.last_look("u", "main") is None
    # 20 looks of main, then 50 of another phase: main's last lies several chunks back.
    for i, phase in enumerate(["main"] * 20 + ["ab-1"] * 50, start=1):
        assert store.append_look("u", look(phase, i), fingerprint=f"f{i}", cap=100)
        assert store.last_look("u", phase) == store.looks("u", phase)[-1] == look(phase, i)
    assert store.last_look("u", "main") == look("main", 20)
    assert store.last_look("u", "none") is None
    assert store.last_look("other", "main") is None


def test_a_look_at_the_phase_s_last_data_is_not_recorded_again(store: Store) -> None:
    assert store.append_look("u", look("main", 1), fingerprint="same", cap=10)
    for i in range(2, 500):
        assert not store.append_look("u", look("main", i), fingerprint="same", cap=10)
    assert store.append_look("u", look("ab-1", 1), fingerprint="same", cap=10)  # another phase
    assert store.append_look("u", look("main", 501), fingerprint="new", cap=10)
    assert store.append_look("u", look("main", 502), fingerprint="same", cap=10)  # not the last
    assert [x["look"] for x in store.looks("u", "main")] == [1, 501, 502]


def test_a_phase_holds_at_most_cap_looks(store: Store) -> None:
    added = [store.append_look("u", look("main", i), fingerprint=str(i), cap=3) for i in range(6)]
    assert added == [True, True, True, False, False, False]
    assert store.append_look("u", look("ab-1", 0), fingerprint="0", cap=3)
    assert [x["look"] for x in store.looks("u", "main")] == [0, 1, 2]


def test_a_look_that_is_not_json_is_refused_and_nothing_is_stored(store: Store) -> None:
    assert store.append_look("u", look("main", 1), fingerprint="a", cap=5)
    with pytest.raises(ValueError, match="Out of range float values"):
        store.append_look("u", look("main", 2, effect=float("nan")), fingerprint="b", cap=5)
    assert store.looks("u") == [look("main", 1)]
    assert store.append_look("u", look("main", 3), fingerprint="b", cap=5)


def test_two_writers_at_once_lose_nothing_and_keep_the_rules(store_url: str) -> None:
    stores = [open_store(store_url), open_store(store_url)]
    start = threading.Barrier(2)
    results: dict[int, list[bool]] = {}

    def write(i: int) -> None:
        st = stores[i]
        start.wait()
        # Writer i's own data, then data both writers saw, then a cap both run into.
        own = [st.append_look("u", look("main", n, by=i), fingerprint=f"{i}-{n}", cap=1000)
               for n in range(40)]  # fmt: skip
        same = st.append_look("u", look("same", 0, by=i), fingerprint="x", cap=1000)
        for n in range(20):
            st.append_look("u", look("capped", n, by=i), fingerprint=f"{i}{n}", cap=25)
        results[i] = [*own, same]

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    main = stores[0].looks("u", "main")
    assert sorted((x["by"], x["look"]) for x in main) == sorted(
        (i, n) for i in range(2) for n in range(40)
    )
    for i in range(2):  # each writer's looks in its own order
        assert [x["look"] for x in main if x["by"] == i] == list(range(40))
    assert len(stores[0].looks("u", "same")) == 1
    assert len(stores[0].looks("u", "capped")) == 25
    assert sum(r[40] for r in results.values()) == 1
    for s in stores:
        s.close()


def test_delete_forgets_the_looks_unless_the_history_is_kept(store: Store) -> None:
    old = store.put_experiment(SPEC).record
    store.append_look(old.uid, look("main", 1), fingerprint="a", cap=5)
    store.delete_experiment("exp")
    assert store.looks(old.uid) == []
    new = store.put_experiment(SPEC).record
    assert store.looks(new.uid) == []  # a re-created experiment starts empty
    assert store.append_look(new.uid, look("main", 1), fingerprint="a", cap=5)
    store.delete_experiment("exp", keep_history=True)
    assert store.looks(new.uid) == [look("main", 1)]


def test_an_sqlite_store_of_schema_6_gets_the_looks_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    open_store(f"sqlite:///{path}").close()
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE looks; PRAGMA user_version = 6;")
    db.close()
    store = open_store(f"sqlite:///{path}")
    assert store.append_look("u", look("main", 1), fingerprint="a", cap=5)
    assert store.looks("u") == [look("main", 1)]
    store.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 7
