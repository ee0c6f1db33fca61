"""A look at the metrics a SQL source holds: the query for the phase's window (from the
phase's start to the look, or the phase's end), its rows made into the per-arm statistics
`folding.export` gives for the built-in store, and what ran (query text, engine, duration)
kept beside them for the look's history.

A source is queried at most once per `min_interval` per experiment, phase and source: the
answer is kept in the process and in the store's control documents (under the experiment's
uid, so deleted with it), so the controller, every service replica's verdict endpoint and
each `abmesh decide` share one query per interval instead of each running its own."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from experiments.distributions import edges
from experiments.errors import ConflictError, StoreError
from experiments.folding import PRE, FoldPlan
from experiments.spec import ExperimentSpec
from experiments.spec_source import SqlSource, sources_of
from experiments.status import PhaseRecord
from experiments.store.protocol import ControlStore
from experiments.warehouse.engines import DIALECT, engine_of, resolve, run
from experiments.warehouse.query import BINS, Layout, Window, build

log = logging.getLogger("abmesh.warehouse")
_CACHE_SIZE = 512  # (experiment, phase, source) answers kept per process


@dataclass(frozen=True, slots=True)
class SourceAnswer:
    arms: dict[str, Any]  # variant -> {"exposures", "metrics"}, as folding.export
    segments: dict[str, dict[str, dict[str, Any]]]  # attribute -> value -> arms
    ran: dict[str, Any]  # what ran: engine, query, duration_s, at, window
    distributions: dict[str, dict[str, Any]]  # as experiments.distributions exports them

    def reused(self) -> SourceAnswer:
        return replace(self, ran={**self.ran, "reused": True})


_cache: OrderedDict[tuple[str, str, str], tuple[float, SourceAnswer]] = OrderedDict()
_lock = threading.Lock()


def sql_sources(spec: ExperimentSpec) -> list[tuple[SqlSource, dict[str, bool]]]:
    """Each SQL source the spec reads with its event metrics (name -> is a conversion)."""
    plan = FoldPlan.from_spec(spec)
    grouped: dict[str, tuple[SqlSource, dict[str, bool]]] = {}
    for metric, source in sources_of(spec.source, spec.metrics).items():
        if source is not None:
            entry = grouped.setdefault(source.model_dump_json(), (source, {}))
            entry[1][metric] = metric in plan.conversion
    if spec.source is not None:  # the exposures come from it, metrics or not
        grouped.setdefault(spec.source.model_dump_json(), (spec.source, {}))
    return list(grouped.values())


def read_source(
    spec: ExperimentSpec,
    source: SqlSource,
    metrics: Mapping[str, bool],
    *,
    key: tuple[str, str],
    phase: PhaseRecord,
    now: float,
    shared: ControlStore | None = None,
) -> SourceAnswer:
    """The source's statistics for `metrics` in `phase` at `now` (`key`: the experiment's
    uid and the phase); the answer of a query run less than `min_interval` ago, here or by
    another process sharing the store, is reused (`ran["reused"]`)."""
    # What the query depends on besides the window: a spec change that alters it is a miss.
    identity = json.dumps([source.model_dump(mode="json"), sorted(metrics.items()),
                           [s.model_dump(mode="json") for s in spec.segments],
                           [(v.key, v.header_value) for v in spec.variants]])  # fmt: skip
    cache_key = (*key, identity)
    doc_key = f"{key[0]}#sql#{key[1]}#{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
    with _lock:
        held = _cache.get(cache_key)
    if held is not None and time.monotonic() - held[0] < source.min_interval:
        return held[1].reused()
    doc, version = _shared_answer(shared, doc_key)
    if doc is not None and 0 <= time.time() - doc["queried_at"] < source.min_interval:
        return SourceAnswer(**doc["answer"]).reused()
    url = resolve(source.connection)
    engine = engine_of(url)
    plan = FoldPlan.from_spec(spec)
    sql, layout, window = query_for(spec, source, metrics, phase, now, DIALECT[engine], plan)
    began = time.perf_counter()
    rows = run(url, sql, source.timeout)
    ran = {
        "kind": "sql", "engine": engine, "metrics": sorted(metrics), "query": sql,
        "duration_s": time.perf_counter() - began, "at": window.until, "reused": False,
        "window": {"start": window.start, "until": window.until, "pre_start": window.pre_start},
    }  # fmt: skip
    answer = assemble(rows, layout, plan, ran)
    if shared is not None:
        saved = {"queried_at": time.time(), "answer": asdict(answer)}
        try:
            shared.put_control(doc_key, saved, version)
        except ConflictError:
            pass  # another process answered the same look: its answer is as good
        except StoreError as exc:
            log.warning("SQL answer of %s not shared through the store: %s", key[0], exc)
    with _lock:
        _cache[cache_key] = (time.monotonic(), answer)
        _cache.move_to_end(cache_key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return answer


def query_for(
    spec: ExperimentSpec,
    source: SqlSource,
    metrics: Mapping[str, bool],
    phase: PhaseRecord,
    now: float,
    dialect: str,
    plan: FoldPlan | None = None,
) -> tuple[str, Layout, Window]:
    """The query a look at `now` runs: the phase's window, up to its end if it ended (`plan`:
    the spec's fold plan, if the caller has it)."""
    plan = plan or FoldPlan.from_spec(spec)
    until = now if phase.ended_at is None else min(now, phase.ended_at)
    window = Window(phase.started_at, until, phase.started_at - source.pre_period)
    names = {v.header_value: v.key for v in spec.variants} | {v.key: v.key for v in spec.variants}
    sql, layout = build(
        source, experiment=spec.name, variants=names, metrics=metrics,
        pairs=plan.pairs, segments=spec.segments, window=window, dialect=dialect,
        binned=plan.histograms,
    )  # fmt: skip
    return sql, layout, window


def _shared_answer(shared: ControlStore | None, key: str) -> tuple[dict[str, Any] | None, int]:
    if shared is None:
        return None, 0
    try:
        return shared.get_control(key)
    except StoreError as exc:  # the warehouse can still answer
        log.warning("SQL answers not shared through the store: %s", exc)
        return None, 0


def assemble(
    rows: Sequence[Sequence[Any]], layout: Layout, plan: FoldPlan, ran: dict[str, Any]
) -> SourceAnswer:
    """The query's rows as `folding.export`'s arms (and `export_segments`' cells, and
    `export_distributions`' bins)."""
    arms: dict[str, Any] = {}
    segments: dict[str, dict[str, dict[str, Any]]] = {}
    bins: dict[str, dict[str, list[list[float]]]] = {s: {} for s in layout.binned}
    width = len(layout.series)
    for row in sorted(rows, key=lambda r: (str(r[0] or ""), str(r[1] or ""), str(r[2]))):
        attr, value, variant, n = str(row[0] or ""), str(row[1] or ""), str(row[2]), float(row[3])
        if attr == BINS:
            series, _, label = value.rpartition("|")
            bins[series].setdefault(variant, []).append([*edges(label), int(n)])
            continue
        # Per series Σv, Σd and Σd², d = v − (the arm's mean): the cell's m2 = Σd² − (Σd)²/n.
        shifted = {s: [float(x) for x in row[4 + 3 * i : 7 + 3 * i]]
                   for i, s in enumerate(layout.series)}  # fmt: skip
        sums = {s: (v, max(q - d * d / n, 0.0)) for s, (v, d, q) in shifted.items()}
        comoments = {
            (a, b): float(row[4 + 3 * width + j]) - shifted[a][1] * shifted[b][1] / n
            for j, (a, b) in enumerate(layout.pairs)
        }
        arm = {"exposures": int(n), "metrics": _metrics(plan, n, sums, comoments)}
        if attr:
            segments.setdefault(attr, {}).setdefault(value, {})[variant] = arm
        else:
            arms[variant] = arm
    distributions = {
        s: {
            variant: {
                "units": arm["exposures"],
                "zeros": arm["exposures"] - sum(c for _, _, c in per_arm.get(variant, [])),
                "bins": sorted(per_arm.get(variant, [])),
            }
            for variant, arm in arms.items()
        }
        for s, per_arm in bins.items()
    }
    return SourceAnswer(arms, segments, ran, distributions)


def _metrics(
    plan: FoldPlan,
    n: float,
    sums: Mapping[str, tuple[float, float]],
    comoments: Mapping[tuple[str, str], float],
) -> dict[str, Any]:
    """One arm's metrics from Σv, m2 per series and the pairs' co-moments."""

    def cross(a: str, b: str) -> tuple[float, float]:
        c = comoments[(a, b)]
        return c + sums[a][0] * sums[b][0] / n, c

    out: dict[str, Any] = {}
    for s in (s for s in sums if not s.endswith(PRE)):
        (total, m2), (x, m2_x) = sums[s], sums[s + PRE]
        xy, c_xy = cross(s, s + PRE)
        out[s] = {
            "n": int(n), "sum": total, "sum_sq": m2 + total * total / n, "m2": m2,
            "sum_x": x, "sum_x2": m2_x + x * x / n, "m2_x": m2_x, "sum_xy": xy, "c_xy": c_xy,
        }  # fmt: skip
    for name, (num, den) in plan.ratios.items():
        if num not in sums or den not in sums:
            continue
        parts = (num, den, num + PRE, den + PRE)
        pairs = {
            f"{a}|{b}": dict(zip(("sum", "comoment"), cross(a, b), strict=True))
            for a, b in plan.pairs
            if a in parts and b in parts
        }
        out[name] = {
            "n": int(n), "numerator": num, "denominator": den,
            "sum_num_den": pairs[f"{num}|{den}"]["sum"],
            "c_num_den": pairs[f"{num}|{den}"]["comoment"], "pairs": pairs,
        }  # fmt: skip
    return out
