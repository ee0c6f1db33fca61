"""The shadow phase's predictions in every store: paired by request id, folded once however
often a batch is sent, expired as unpaired after the window, and gone with the experiment."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from experiments import load_spec
from experiments.predictions import Prediction
from experiments.shadow_sums import BINS, ShadowSums
from experiments.store import Store, open_store

RANGE = (0.0, 1.0)
WINDOW = 60.0
NOW = 1_800_000_000.0


def predictions(n: int, seed: int, *, flip: float = 0.0) -> list[Prediction]:
    """Both arms' predictions of n requests: stable scores uniform, the candidate's shifted by
    0.01; labels from the score at 0.5, a share `flip` of the candidate's flipped."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        s = rng.random()
        c = min(0.999, s + 0.01)
        label = "yes" if s >= 0.5 else "no"
        other = ("no" if label == "yes" else "yes") if rng.random() < flip else label
        out.append(Prediction(f"r{seed}-{i}", "stable", NOW, s, label, 10.0))
        out.append(Prediction(f"r{seed}-{i}", "candidate", NOW, c, other, 12.0))
    return out


def expected(batch: list[Prediction]) -> ShadowSums:
    by_id: dict[str, dict[str, Prediction]] = {}
    for p in batch:
        by_id.setdefault(p.request_id, {})[p.role] = p
    sums = ShadowSums(*RANGE)
    for pair in by_id.values():
        s, c = pair["stable"], pair["candidate"]
        sums.add_pair(
            {"score": s.score, "label": s.label, "latency_ms": s.latency_ms},
            {"score": c.score, "label": c.label, "latency_ms": c.latency_ms},
        )
    return sums


def read(store: Store, now: float = NOW) -> ShadowSums:
    return store.shadow_sums("shadowed", "main", score_range=RANGE, window_s=WINDOW, now=now)


def add(store: Store, batch: list[Prediction], now: float = NOW) -> tuple[int, int, int]:
    r = store.add_predictions("shadowed", "main", batch, score_range=RANGE, window_s=WINDOW,
                              now=now)  # fmt: skip
    return r.accepted, r.duplicates, r.paired


def same(got: ShadowSums, want: ShadowSums) -> None:
    for name in ("pairs", "labelled", "disagreements", "scored"):
        assert getattr(got, name) == getattr(want, name), name
    for name in ("sum_d", "sum_d2", "sum_stable"):
        assert getattr(got, name) == pytest.approx(getattr(want, name), rel=1e-12), name
    assert got.hist == want.hist
    assert got.latency == pytest.approx(want.latency)


def test_pairs_fold_once_in_any_order_and_batching(store: Store) -> None:
    batch = predictions(500, 1, flip=0.03)
    shuffled = batch[:]
    random.Random(2).shuffle(shuffled)
    for start in range(0, len(shuffled), 137):
        add(store, shuffled[start : start + 137])
    got = read(store)
    same(got, expected(batch))
    assert got.pending == 0
    assert sum(sum(h) for h in got.hist.values()) == 2 * 500
    assert len(got.hist["stable"]) == BINS + 2


def test_a_resent_batch_changes_nothing(store: Store) -> None:
    batch = predictions(200, 3)
    assert add(store, batch) == (400, 0, 200)
    assert add(store, batch) == (0, 400, 0)  # all paired already
    half = predictions(50, 4)[::2]  # stable only: waiting
    assert add(store, half) == (50, 0, 0)
    assert add(store, half) == (0, 50, 0)  # waiting already
    got = read(store)
    same(got, expected(batch))
    assert got.pending == 50
    assert sum(sum(h) for h in got.traffic.values()) == 400 + 50  # each prediction once


def test_predictions_alone_past_the_window_count_as_unpaired(store: Store) -> None:
    stable_only = [p for p in predictions(30, 5) if p.role == "stable"]
    add(store, stable_only)
    assert read(store, NOW + WINDOW / 2).pending == 30
    late = read(store, NOW + WINDOW + 1)
    assert late.pending == 0
    assert late.unpaired == {"stable": 30}
    assert late.pairs == 0
    # A partner arriving after its prediction expired waits alone in turn.
    partners = [p for p in predictions(30, 5) if p.role == "candidate"]
    add(store, [Prediction(p.request_id, p.role, NOW + WINDOW + 2, p.score) for p in partners],
        now=NOW + WINDOW + 2)  # fmt: skip
    assert read(store, NOW + WINDOW + 3).pending == 30
    assert read(store, NOW + 3 * WINDOW).unpaired == {"stable": 30, "candidate": 30}


def test_concurrent_writers_pair_everything_exactly_once(store_url: str) -> None:
    batch = predictions(1200, 6, flip=0.05)
    stable = [p for p in batch if p.role == "stable"]
    candidate = [p for p in batch if p.role == "candidate"]
    errors: list[BaseException] = []

    def post(items: list[Prediction]) -> None:
        st = open_store(store_url)
        try:
            for start in range(0, len(items), 100):
                add(st, items[start : start + 100])
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            st.close()

    threads = [threading.Thread(target=post, args=(part,)) for part in (stable, candidate)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    st = open_store(store_url)
    got = read(st)
    st.close()
    same(got, expected(batch))
    assert got.pending == 0


def test_sums_agree_with_numpy(store: Store) -> None:
    batch = predictions(300, 7, flip=0.1)
    add(store, batch)
    got = read(store)
    s = np.array([p.score for p in batch if p.role == "stable"], dtype=float)
    c = np.array([p.score for p in batch if p.role == "candidate"], dtype=float)
    assert got.sum_d == pytest.approx(float(np.sum(c - s)), rel=1e-9)
    assert got.sum_d2 == pytest.approx(float(np.sum((c - s) ** 2)), rel=1e-9)
    labels = [(a.label, b.label) for a, b in zip(batch[::2], batch[1::2], strict=True)]
    assert got.disagreements == sum(a != b for a, b in labels)


def test_deleting_the_experiment_deletes_its_predictions(store: Store) -> None:
    store.put_experiment(load_spec({
        "name": "shadowed",
        "variants": [{"key": k, "header_value": k, "weight": 50, "destination": {"host": k}}
                     for k in ("control", "treatment")],
    }))  # fmt: skip
    add(store, [*predictions(20, 8), Prediction("alone", "stable", NOW, 0.5)])
    store.delete_experiment("shadowed")
    got = read(store)
    assert got.pairs == 0
    assert got.pending == 0
