"""The controller's part of the store contract, on SQLite and a real Redis server: versioned
state documents (compare-and-set), the audit log, and leases under contention."""

from __future__ import annotations

import threading
import time

import pytest

from experiments.errors import ConflictError
from experiments.store import Store, open_store


def test_state_documents_are_compare_and_set(store: Store) -> None:
    assert store.get_control("exp") == (None, 0)
    assert store.put_control("exp", {"step": 1}, 0) == 1
    assert store.get_control("exp") == ({"step": 1}, 1)
    with pytest.raises(ConflictError, match="version 1, not 0"):
        store.put_control("exp", {"step": 9}, 0)
    assert store.put_control("exp", {"step": 2}, 1) == 2
    assert store.get_control("exp") == ({"step": 2}, 2)
    assert store.get_control("other") == (None, 0)
    with pytest.raises(ValueError, match="Out of range float values"):
        store.put_control("exp", {"x": float("nan")}, 2)
    assert store.get_control("exp") == ({"step": 2}, 2)  # nothing lost


def test_one_of_two_racing_writers_wins(store_url: str) -> None:
    stores = [open_store(store_url), open_store(store_url)]
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def write(i: int) -> None:
        start.wait()
        try:
            stores[i].put_control("race", {"by": i}, 0)
            outcomes.append("won")
        except ConflictError:
            outcomes.append("lost")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost", "won"]
    for s in stores:
        s.close()


def test_audit_is_append_only_and_ordered(store: Store) -> None:
    for i in range(5):
        store.append_audit("exp", {"i": i, "action": "step"})
    store.append_audit("other", {"i": 99})
    assert [e["i"] for e in store.audit("exp")] == [0, 1, 2, 3, 4]
    assert store.audit("none") == []


def test_leases_elect_one_owner_and_expire(store: Store) -> None:
    assert store.acquire_lease("controller", "a", 0.5)
    assert not store.acquire_lease("controller", "b", 0.5)
    assert store.acquire_lease("controller", "a", 0.5)  # renewal
    store.release_lease("controller", "b")  # not b's: no effect
    assert not store.acquire_lease("controller", "b", 0.5)
    time.sleep(0.6)
    assert store.acquire_lease("controller", "b", 0.5)  # a's lease expired
    store.release_lease("controller", "b")
    assert store.acquire_lease("controller", "a", 0.5)


def test_only_one_of_many_contenders_takes_a_lease(store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(4)]
    start = threading.Barrier(4)
    winners: list[int] = []

    def take(i: int) -> None:
        start.wait()
        if stores[i].acquire_lease("race", f"owner-{i}", 5):
            winners.append(i)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    for s in stores:
        s.close()
