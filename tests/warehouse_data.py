"""Generated exposures and events in the warehouse layout (experiments.spec_source defaults),
with everything the folding rules must get right: redelivered events (the same event_id
twice), events before the unit's exposure (covariates) and of units never exposed, a
covariate column, segment values (declared, capped, invalid, missing), ratio parts, and rows
outside the phase's window.  Vectorised, so the benchmark draws 10^7 events with it too."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from experiments import load_spec
from experiments.folding import Event, FoldPlan
from experiments.reporting import phase_report
from experiments.segments import as_pairs
from experiments.spec import ExperimentSpec
from experiments.status import PhaseRecord
from experiments.store import Store
from experiments.store.logfold import as_exposures
from experiments.warehouse.read import SourceAnswer, read_source

START = 1_800_000_000.0  # the phase's start (unix s)
SPAN = 7 * 86_400.0  # exposures arrive over this long
COUNTRIES = np.array(["US", "DE", "FR", "JP", ""])  # JP: not declared; '': no value
PLATFORMS = np.array(["ios", "android", "web"])


def spec(name: str = "warehouse", source: dict[str, Any] | None = None) -> ExperimentSpec:
    variants = [
        {"key": k, "weight": 50, "header_value": f"group-{k}", "destination": {"host": k}}
        for k in ("control", "treatment")
    ]
    metrics = {
        "primary": {"name": "purchase", "kind": "conversion"},
        "secondary": [
            {"name": "revenue", "kind": "sum"},
            {"name": "revenue_per_click", "kind": "ratio", "numerator": "revenue",
             "denominator": "click"},
        ],
    }  # fmt: skip
    body: dict[str, Any] = {
        "name": name, "variants": variants, "metrics": metrics,
        "segments": [{"name": "country", "values": ["US", "DE", "FR"]}, "platform"],
    }  # fmt: skip
    if source is not None:
        body["source"] = source
    return load_spec(body)


@dataclass
class Data:
    exposures: pd.DataFrame  # unit, variant, timestamp, country, platform, pre_revenue
    events: pd.DataFrame  # event_id, unit, metric, value, timestamp
    # What abmesh's own store is given for the covariate column: a pre-exposure event each.
    covariate_events: pd.DataFrame


def generate(units: int, events: int, seed: int = 7) -> Data:
    rng = np.random.default_rng(seed)
    ids = np.array([f"u{i}" for i in range(units)], dtype=object)
    exposed = rng.random(units) < 0.9  # a tenth are never exposed: their events never count
    at = START + rng.random(units) * SPAN
    variant = np.where(rng.random(units) < 0.5, "control", "treatment")
    country = COUNTRIES[rng.integers(0, len(COUNTRIES), units)]
    platform = PLATFORMS[rng.integers(0, len(PLATFORMS), units)]
    pre = np.where(rng.random(units) < 0.3, np.round(rng.lognormal(3, 1, units), 2), np.nan)
    exposures = pd.DataFrame({
        "unit": ids[exposed], "variant": variant[exposed], "timestamp": at[exposed],
        "country": np.where(country[exposed] == "", None, country[exposed]),
        "platform": platform[exposed], "pre_revenue": pre[exposed],
    })  # fmt: skip
    who = rng.integers(0, units, events)
    metric = np.array(["purchase", "revenue", "click"])[rng.choice(3, events, p=[0.1, 0.3, 0.6])]
    value = np.where(metric == "revenue", np.round(rng.lognormal(2, 1.2, events), 2), 1.0)
    # Most events follow the exposure; a fifth lie up to two days before it (covariates),
    # some within the clock-skew allowance, so both sides of the boundary are drawn.
    offset = rng.exponential(86_400.0, events)
    early = rng.random(events)
    offset = np.where(early < 0.2, -rng.random(events) * 2 * 86_400.0, offset)
    offset = np.where((early >= 0.2) & (early < 0.25), -rng.random(events) * 59.0, offset)
    table = pd.DataFrame({
        "event_id": [f"e{i}" for i in range(events)], "unit": ids[who], "metric": metric,
        "value": value, "timestamp": at[who] + offset,
    })  # fmt: skip
    again = table.sample(frac=0.05, random_state=seed)  # redelivered: the same event again
    table = pd.concat([table, again], ignore_index=True)
    has_pre = exposed & ~np.isnan(pre)
    covariate_events = pd.DataFrame({
        "event_id": [f"pre-{u}" for u in ids[has_pre]], "unit": ids[has_pre],
        "metric": "revenue", "value": pre[has_pre], "timestamp": at[has_pre] - 3 * 86_400.0,
    })  # fmt: skip
    return Data(exposures, table, covariate_events)


POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
_PG_TYPES = {"O": "TEXT", "f": "DOUBLE PRECISION", "i": "BIGINT"}


def load_duckdb(path: str, data: Data) -> None:
    import duckdb

    with duckdb.connect(path) as con:
        for name, frame in (("exposures", data.exposures), ("events", data.events)):
            con.register("frame", frame)
            con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM frame")
            con.unregister("frame")


def load_postgres(schema: str, data: Data) -> None:
    """Into `schema` (created; drop it with `drop_postgres`), by COPY."""
    import psycopg

    with psycopg.connect(POSTGRES, autocommit=True) as con:
        con.execute(f'CREATE SCHEMA "{schema}"')
        for name, frame in (("exposures", data.exposures), ("events", data.events)):
            columns = ", ".join(f'"{c}" {_PG_TYPES[frame[c].dtype.kind]}' for c in frame)
            con.execute(f'CREATE TABLE "{schema}"."{name}" ({columns})')
            with con.cursor().copy(
                f'COPY "{schema}"."{name}" FROM STDIN WITH (FORMAT csv)'
            ) as copy:
                copy.write(frame.to_csv(index=False, header=False))


def drop_postgres(schema: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def load_chdb(directory: str, data: Data) -> None:
    """MergeTree tables in a chdb session at `directory`, through abmesh's own runner (chdb
    holds one session per process)."""
    from experiments.warehouse.engines import run

    for name, frame in (("exposures", data.exposures), ("events", data.events)):
        parquet = f"{directory}/{name}.parquet"
        frame.to_parquet(parquet, index=False)
        run(f"chdb://{directory}", f"CREATE TABLE {name} ENGINE = MergeTree ORDER BY tuple()"
            f" AS SELECT * FROM file('{parquet}', Parquet)", 600)  # fmt: skip


PHASE = PhaseRecord("main", START, START + SPAN + 30 * 86_400.0)  # a window holding every row
METRICS = {"purchase": True, "revenue": False, "click": False}  # the spec's event metrics


def fold_in_store(store: Store, data: Data) -> dict[str, Any]:
    """abmesh's own folding of the data (the covariate column as pre-exposure events): the
    spec put in `store`, half the events appended before the exposures and half after, in
    batches, folded; the phase's report."""
    s = spec()
    store.put_experiment(s)
    record = store.get_experiment(s.name)
    plan = FoldPlan.from_spec(s)
    exposures = {
        r.unit: (r.variant, r.timestamp, 1, as_pairs({k: v for k, v in (("country", r.country),
                 ("platform", r.platform)) if isinstance(v, str)}))
        for r in data.exposures.itertuples()
    }  # fmt: skip
    events = [Event(r.event_id, r.unit, r.metric, r.value, r.timestamp)
              for f in (data.events, data.covariate_events) for r in f.itertuples()]  # fmt: skip
    half = len(events) // 2
    for i in range(0, half, 5000):
        store.append_events(s.name, record.phase, plan, events[i : min(i + 5000, half)])
    store.append_exposures(s.name, record.phase, plan, as_exposures(exposures))
    for i in range(half, len(events), 5000):
        store.append_events(s.name, record.phase, plan, events[i : i + 5000])
    report = phase_report(store, record, settle=120)
    assert report["fold"]["pending"] == 0
    return report


def look(url: str, exposures: str, events: str, columns: dict[str, Any]) -> SourceAnswer:
    """One look at the spec's metrics through a SQL source, over `PHASE`, queried anew."""
    s = spec(source={"kind": "sql", "connection": url, "exposures": exposures,
                     "events": events, "columns": columns, "min_interval": 0})  # fmt: skip
    assert s.source is not None
    return read_source(s, s.source, METRICS, key=(uuid.uuid4().hex, "main"), phase=PHASE,
                       now=PHASE.ended_at or 0.0)  # fmt: skip
