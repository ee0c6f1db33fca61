"""What one look at a SQL metric source costs, per engine, at the sizes issue 18 names.

    python benchmarks/warehouse_look.py [--events 10000000] [--units 1000000]
                                        [--pg-events 1000000] [--pg-units 100000] [--looks 3]
                                        [--engines duckdb,chdb,postgres]

Generated exposures and events (tests/warehouse_data.py: redeliveries, pre-exposure events, a
covariate column, three metrics one a conversion, a ratio, two segments) are loaded into
DuckDB (a database file), chdb (MergeTree tables in a session directory) and PostgreSQL
(127.0.0.1:5432, database `test`, a schema of its own dropped at the end).  Each engine then
answers `--looks` looks through `read_source` (the query, its rows made into arms, cells and
bins; `min_interval: 0`, so every look queries): the first (cold) apart, then the median and
maximum of the rest, and events per second.  Beside each, in the same run, the same look on a
tenth of the events: how the look time grows with the data (a ratio near 10 is linear).
Times are printed, never asserted; the goal is at most 5 s per look at 10^7 events.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.warehouse_data import (  # noqa: E402
    POSTGRES,
    Data,
    drop_postgres,
    generate,
    load_chdb,
    load_duckdb,
    load_postgres,
    look,
)

COLUMNS = {"exposures": {"covariates": {"revenue": "pre_revenue"}}}


def looks(url: str, relation: tuple[str, str], count: int) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        answer = look(url, *relation, COLUMNS)
        times.append(time.perf_counter() - began)
        assert answer.arms, "the look found no exposures"
    return times


def row(engine: str, events: int, load_s: float, times: list[float]) -> str:
    warm = times[1:] or times
    median = statistics.median(warm)
    return (f"{engine:<10} {events:>11,} {load_s:>7.1f} {times[0]:>8.2f} {median:>8.2f}"
            f" {max(warm):>8.2f} {events / median:>12,.0f}")  # fmt: skip


Loaded = tuple[str, tuple[str, str], Callable[[], None]]  # URL, relations, clean-up


def measure(
    engine: str, data: Data, load: Callable[[Data], Loaded], count: int
) -> tuple[str, float]:
    began = time.perf_counter()
    url, relation, cleanup = load(data)
    load_s = time.perf_counter() - began
    try:
        times = looks(url, relation, count)
    finally:
        cleanup()
    events = len(data.events)
    return row(engine, events, load_s, times), statistics.median(times[1:] or times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument("--pg-events", type=int, default=1_000_000)
    parser.add_argument("--pg-units", type=int, default=100_000)
    parser.add_argument("--looks", type=int, default=3)
    parser.add_argument("--engines", default="duckdb,chdb,postgres", help="comma-separated")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="abmesh-wh-"))

    def duckdb_at(name: str) -> Callable[[Data], Loaded]:
        def load(data: Data) -> Loaded:
            load_duckdb(str(work / f"{name}.duckdb"), data)
            return f"duckdb:///{work}/{name}.duckdb", ("exposures", "events"), lambda: None

        return load

    def chdb_at(name: str) -> Callable[[Data], Loaded]:
        def load(data: Data) -> Loaded:
            (work / name).mkdir()
            load_chdb(str(work / name), data)
            return f"chdb://{work}/{name}", ("exposures", "events"), lambda: None

        return load

    def postgres(data: Data) -> Loaded:
        schema = f"abmesh_bench_{uuid.uuid4().hex[:10]}"
        try:
            load_postgres(schema, data)
        except BaseException:
            drop_postgres(schema)
            raise
        return POSTGRES, (f"{schema}.exposures", f"{schema}.events"), lambda: drop_postgres(schema)

    print(f"{'engine':<10} {'events':>11} {'load s':>7} {'cold s':>8} {'median s':>8}"
          f" {'max s':>8} {'events/s':>12}")  # fmt: skip
    sizes = [("duckdb", args.events, args.units, duckdb_at), ("chdb", args.events, args.units,
             chdb_at)]  # fmt: skip
    ratios = []
    engines = set(args.engines.split(","))
    for engine, events, units, at in (size for size in sizes if size[0] in engines):
        small = generate(units // 10, events // 10, seed=1)
        line, base = measure(engine, small, at(f"{engine}-small"), args.looks)
        print(line, flush=True)
        del small
        big = generate(units, events, seed=1)
        line, full = measure(engine, big, at(f"{engine}-full"), args.looks)
        print(line, flush=True)
        del big
        ratios.append(f"{engine}: {full / base:.1f}× the time for 10× the events")
    if "postgres" in engines:
        small = generate(args.pg_units // 10, args.pg_events // 10, seed=1)
        line, base = measure("postgres", small, postgres, args.looks)
        print(line, flush=True)
        big = generate(args.pg_units, args.pg_events, seed=1)
        line, full = measure("postgres", big, postgres, args.looks)
        print(line, flush=True)
        ratios.append(f"postgres: {full / base:.1f}× the time for 10× the events")
    print("\n".join(["", *ratios]))
    print("events counts include the 5 % redelivered; every look also bins two metrics and"
          " counts two segments")


if __name__ == "__main__":
    main()
