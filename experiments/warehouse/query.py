"""The one query that turns a warehouse's exposures and events into per-arm (and per-segment)
sufficient statistics, with abmesh's own folding rules (experiments.foldbatch):

- a unit's arm is its first exposure in the phase (earliest, ties by variant), a variant
  named by its key or its header value (`group-b`); rows of other variants are not read;
- an event counts once per `event_id` (redeliveries are dropped);
- an event no earlier than `SKEW_S` before the unit's exposure counts in the metric, an
  earlier one (and the exposure's covariate column, if the source names one) in the metric's
  pre-period series, the CUPED covariate; events of units never exposed never count;
- a unit's value is its total (`sum`/`mean`) or whether it has any event (`conversion`); an
  exposed unit without events counts as 0;
- per arm, and per cell `arm × segment value`, the query returns n, Σv and the sums of the
  values centred on their arm's mean, computed first (two passes): the central moments
  follow without the cancellation of docs/statistics.md §3 (docs/statistics.md §21).

It is written once, in DuckDB's dialect, and transpiled by sqlglot for the others; what no
transpiler knows is isolated here: a timestamp column's unix seconds (`EPOCH_SQL`) and the
user's own table or query, placed verbatim in the engine's dialect after transpiling."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sqlglot

from experiments.distributions import HIGH_BIN, LOW_BIN, PER_DECADE
from experiments.foldbatch import SKEW_S
from experiments.folding import PRE
from experiments.spec_segments import MAX_VALUE_CHARS, OTHER, Segment
from experiments.spec_source import SqlSource, is_query

# A timestamp column's unix seconds, per dialect (sqlglot has no portable spelling of it).
EPOCH_SQL = {
    "duckdb": "epoch({})",
    "postgres": "EXTRACT(EPOCH FROM {})",
    "clickhouse": "(toUnixTimestamp64Micro(toDateTime64({}, 6)) / 1e6)",
    "bigquery": "(UNIX_MICROS({}) / 1e6)",
    "snowflake": "(DATE_PART(epoch_microsecond, {}) / 1e6)",
}
DIALECTS = tuple(EPOCH_SQL)
_NOT_NULL = re.compile(r"AS Nullable\((String|Float64)\)\) AS (unit|event_id|metric|value|ts_s)\b")
_EXPOSURES, _EVENTS, _EPOCH = "abmesh_exposures_src", "abmesh_events_src", "ABMESH_EPOCH"
# log10, spelled per dialect: sqlglot writes PostgreSQL's as LOG(10, x), which PostgreSQL has
# for numeric only, and ln(x)/ln(10) is not log10 to the last bit (the bins' edges would move).
_LOG10 = "ABMESH_LOG10"
LOG10_SQL = {"duckdb": "log10({})", "postgres": "log({})", "clickhouse": "log10({})",
             "bigquery": "LOG10({})", "snowflake": "LOG(10, {})"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Window:
    """What a look reads: exposures in [start, until], events in [pre_start, until]."""

    start: float
    until: float
    pre_start: float


@dataclass(frozen=True, slots=True)
class Layout:
    """The result's columns after `attr, val, arm, n`: per series Σv, Σd and Σd², d = v − the
    arm's mean, then per pair Σd_a·d_b.  `attr` is '' on an arm's row, `BINS` on a bin's
    (`val`: `series|label`, `n` its units, experiments.distributions), else the segment of
    the cell `val`."""

    series: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    binned: tuple[str, ...] = ()


BINS = "~bins"  # not a segment's name: those start with a letter or digit


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    return '"' + name + '"'


def _number(x: float) -> str:
    return repr(float(x))


def build(
    source: SqlSource,
    *,
    experiment: str,
    variants: Mapping[str, str],
    metrics: Mapping[str, bool],
    pairs: Sequence[tuple[str, str]],
    segments: Sequence[Segment],
    window: Window,
    dialect: str,
    binned: Sequence[str] = (),
) -> tuple[str, Layout]:
    """The query for `metrics` (event metric -> is a conversion) with the co-moments of
    `pairs` (of their series), and its layout; `variants`: the exposures' variant names ->
    the arm each counts in."""
    cols, ecols = source.columns.exposures, source.columns.events
    series = tuple(s for m in metrics for s in (m, m + PRE))
    segment_cols = [cols.segments.get(s.name, s.name) for s in segments]
    covariates = [(m, c) for m, c in cols.covariates.items() if m in metrics]

    def at(column: str) -> str:
        col = ident(column)
        return f"{_EPOCH}({col})" if source.timestamps == "timestamp" else col

    x_at, e_at = at(cols.timestamp), at(ecols.timestamp)
    # A row without a unit (or an event without an id) cannot be counted for anyone.
    x_filter = (
        f"{x_at} >= {_number(window.start)} AND {x_at} <= {_number(window.until)}"
        f" AND {ident(cols.unit)} IS NOT NULL"
    )
    if cols.experiment:
        x_filter += f" AND {ident(cols.experiment)} = {literal(experiment)}"
    served = f"CAST({ident(cols.variant)} AS VARCHAR)"
    x_filter += f" AND {served} IN ({', '.join(literal(v) for v in variants)})"
    arm = " ".join(f"WHEN {literal(v)} THEN {literal(k)}" for v, k in variants.items())
    names = ", ".join(literal(m) for m in metrics)
    e_filter = (
        f"{ident(ecols.metric)} IN ({names}) AND {e_at} >= {_number(window.pre_start)}"
        f" AND {e_at} <= {_number(window.until)} AND {ident(ecols.unit)} IS NOT NULL"
        f" AND {ident(ecols.event_id)} IS NOT NULL"
    )
    if ecols.experiment:
        e_filter += f" AND {ident(ecols.experiment)} = {literal(experiment)}"
    col = {s: i for i, s in enumerate(series)}
    binned = [s for s in binned if s in col]
    seg = [f"s{i}" for i in range(len(segments))]
    cov = [f"k{i}" for i in range(len(covariates))]
    x_extra = [
        f"CAST({ident(c)} AS VARCHAR) AS {s}" for c, s in zip(segment_cols, seg, strict=True)
    ]
    x_extra += [
        f"CAST({ident(c)} AS DOUBLE) AS {k}" for (_, c), k in zip(covariates, cov, strict=True)
    ]
    keep = "".join(f", {c}" for c in seg + cov)
    ctes = [
        f"xs AS (SELECT CAST({ident(cols.unit)} AS VARCHAR) AS unit,"
        f" CASE {served} {arm} END AS variant, CAST({x_at} AS DOUBLE) AS ts_s"
        + "".join(f", {c}" for c in x_extra)
        + f" FROM {_EXPOSURES} WHERE {x_filter})",
        f"xr AS (SELECT unit, variant, ts_s{keep}, ROW_NUMBER() OVER"
        " (PARTITION BY unit ORDER BY ts_s, variant) AS rn FROM xs)",
        *_segment_ctes(segments, seg, cov),
        f"es AS (SELECT CAST({ident(ecols.event_id)} AS VARCHAR) AS event_id,"
        f" CAST({ident(ecols.unit)} AS VARCHAR) AS unit,"
        f" CAST({ident(ecols.metric)} AS VARCHAR) AS metric,"
        f" CAST(COALESCE({ident(ecols.value)}, 0) AS DOUBLE) AS value,"
        f" CAST({e_at} AS DOUBLE) AS ts_s"
        f" FROM {_EVENTS} WHERE {e_filter})",
        "er AS (SELECT unit, metric, value, ts_s, ROW_NUMBER() OVER"
        " (PARTITION BY event_id ORDER BY ts_s, unit, metric, value) AS rn FROM es)",
        "e AS (SELECT unit, metric, value, ts_s FROM er WHERE rn = 1)",
        _units_cte(metrics, covariates, seg, cov),
        *_cells_ctes(segments, seg, len(series), [(s, col[s]) for s in binned]),
    ]
    wanted = [(a, b) for a, b in pairs if a in col and b in col]
    select = ["attr", "val", "arm", "CAST(COUNT(*) AS DOUBLE) AS n"]
    for i in range(len(series)):
        select += [f"SUM(w{i}) AS sum{i}", f"SUM(d{i}) AS sd{i}", f"SUM(d{i} * d{i}) AS q{i}"]
    select += [f"SUM(d{col[a]} * d{col[b]}) AS c{j}" for j, (a, b) in enumerate(wanted)]
    text = (
        "WITH " + ", ".join(ctes) + " SELECT " + ", ".join(select)
        + " FROM cells GROUP BY attr, val, arm"
    )  # fmt: skip
    return _place(text, source, dialect), Layout(series, tuple(wanted), tuple(binned))


def _segment_ctes(segments: Sequence[Segment], seg: list[str], cov: list[str]) -> list[str]:
    """`x`: each exposed unit once, with its segment values resolved: a value outside the
    declared list, not a valid label, or beyond the `max_values` with most units, is `(other)`;
    none (NULL or '') is no value."""
    keep = "".join(f", {c}" for c in seg + cov)
    if not segments:
        return [f"x AS (SELECT unit, variant, ts_s{keep} FROM xr WHERE rn = 1)"]
    counts = "".join(f", COUNT(*) OVER (PARTITION BY {s}) AS n_{s}" for s in seg)
    ranks = "".join(
        f", DENSE_RANK() OVER (ORDER BY CASE WHEN {_valid(s)} THEN 0 ELSE 1 END, n_{s} DESC,"
        f" {s}) AS r_{s}"
        for s in seg
    )
    resolved = []
    for s, rule in zip(seg, segments, strict=True):
        if rule.values is not None:
            listed = ", ".join(literal(v) for v in rule.values)
            known = f"{s} IN ({listed})"
        else:
            known = f"{_valid(s)} AND r_{s} <= {rule.max_values}"
        resolved.append(
            f"CASE WHEN {s} IS NULL OR {s} = '' THEN NULL WHEN {known} THEN {s}"
            f" ELSE {literal(OTHER)} END AS {s}"
        )
    covs = "".join(f", {c}" for c in cov)
    return [
        f"xc AS (SELECT unit, variant, ts_s{keep}{counts} FROM xr WHERE rn = 1)",
        f"xk AS (SELECT unit, variant, ts_s{keep}" + "".join(f", n_{s}" for s in seg)
        + f"{ranks} FROM xc)",
        f"x AS (SELECT unit, variant, ts_s{covs}, " + ", ".join(resolved) + " FROM xk)",
    ]  # fmt: skip


def _valid(s: str) -> str:
    """Whether a segment value can be a label (experiments.spec_segments.value_problem)."""
    return (
        f"{s} IS NOT NULL AND {s} <> '' AND LENGTH({s}) <= {MAX_VALUE_CHARS}"
        f" AND {s} NOT LIKE '%|%' AND {s} NOT LIKE '%@%' AND {s} NOT LIKE '%=%'"
        f" AND {s} <> {literal(OTHER)}"
    )


def _units_cte(
    metrics: Mapping[str, bool],
    covariates: Sequence[tuple[str, str]],
    seg: list[str],
    cov: list[str],
) -> str:
    """`u`: per exposed unit its arm, segment values and one value `w<i>` per series."""
    skew = f"x.ts_s - {_number(SKEW_S)}"
    covariate = {m: k for (m, _), k in zip(covariates, cov, strict=True)}
    values = []
    i = 0
    for metric, conversion in metrics.items():
        name = literal(metric)
        post_when = f"e.metric = {name} AND e.ts_s >= {skew}"
        pre_when = f"e.metric = {name} AND e.ts_s < {skew}"
        k = covariate.get(metric)
        if conversion:
            post = f"MAX(CASE WHEN {post_when} THEN 1 ELSE 0 END)"
            pre_any = f"MAX(CASE WHEN {pre_when} THEN 1 ELSE 0 END) = 1"
            if k is not None:
                pre_any += f" OR x.{k} IS NOT NULL"
            pre = f"CASE WHEN {pre_any} THEN 1 ELSE 0 END"
            values += [f"CAST({post} AS DOUBLE) AS w{i}", f"CAST({pre} AS DOUBLE) AS w{i + 1}"]
        else:
            post = f"SUM(CASE WHEN {post_when} THEN e.value ELSE 0 END)"
            pre_sum = f"SUM(CASE WHEN {pre_when} THEN e.value ELSE 0 END)"
            if k is not None:
                pre_sum += f" + COALESCE(x.{k}, 0)"
            values += [f"CAST({post} AS DOUBLE) AS w{i}", f"CAST({pre_sum} AS DOUBLE) AS w{i + 1}"]
        i += 2
    group = ", ".join(f"x.{c}" for c in ["unit", "variant", "ts_s", *seg, *cov])
    return (
        "u AS (SELECT x.variant AS arm" + "".join(f", x.{s} AS {s}" for s in seg)
        + ", " + ", ".join(values)
        + f" FROM x LEFT JOIN e ON e.unit = x.unit GROUP BY {group})"
    )  # fmt: skip


def _cells_ctes(
    segments: Sequence[Segment], seg: list[str], width: int, binned: Sequence[tuple[str, int]]
) -> list[str]:
    """`cells`: every unit in its arm's row, again in its cell per segment it has, and per
    binned series with a non-zero value in that value's bin (experiments.distributions.bins:
    floor(20·log10|v|), clipped, `p`/`n` by sign; a bin's rows count its units).  One pass
    over `u`, crossed with the list of views: ClickHouse inlines a CTE wherever it is named,
    so naming `u` once per view would fold the units again for each."""
    views = [("''", "''")]
    views += [(literal(rule.name), s) for s, rule in zip(seg, segments, strict=True)]
    labels = []  # per unit, computed once in `ua`, not once per view
    for series, i in binned:
        k = f"LEAST(GREATEST(FLOOR({_LOG10}(ABS(w{i})) * {PER_DECADE}), {LOW_BIN}), {HIGH_BIN})"
        label = f"CASE WHEN w{i} > 0 THEN 'p' ELSE 'n' END || CAST(CAST({k} AS BIGINT) AS VARCHAR)"
        labels.append(f", CASE WHEN w{i} <> 0 THEN {literal(series + '|')} || {label} END AS b{i}")
        views.append((literal(BINS), f"ua.b{i}"))
    listed = " UNION ALL ".join(
        f"SELECT {j} AS i, {attr} AS attr" for j, (attr, _) in enumerate(views)
    )
    pick = " ".join(f"WHEN {j} THEN {val}" for j, (_, val) in enumerate(views))
    ws = "".join(f", w{i}" for i in range(width))
    ds = "".join(f", d{i}" for i in range(width))
    # Centred on the arm's mean (the first pass); a cell's sums, shifted by it, are then as
    # well conditioned as the arm's (docs/statistics.md §21).
    centred = "".join(f", w{i} - AVG(w{i}) OVER (PARTITION BY arm) AS d{i}" for i in range(width))
    return [
        f"ua AS (SELECT u.*{''.join(labels)}{centred} FROM u)",
        f"cells AS (SELECT attr, val, arm{ws}{ds} FROM (SELECT views.attr AS attr, CASE views.i"
        f" {pick} END AS val, ua.arm AS arm"
        + "".join(f", ua.w{i} AS w{i}, ua.d{i} AS d{i}" for i in range(width))
        + f" FROM ua CROSS JOIN ({listed}) AS views) AS z WHERE val IS NOT NULL)",
    ]


def _place(text: str, source: SqlSource, dialect: str) -> str:
    """Transpile, then put in what sqlglot must not touch: the epoch spelling and the user's
    own relations, verbatim in the engine's dialect."""
    if dialect not in EPOCH_SQL:
        raise ValueError(f"dialect {dialect!r}: one of {list(EPOCH_SQL)}")
    if dialect != "duckdb":
        text = sqlglot.transpile(text, read="duckdb", write=dialect)[0]
    if dialect == "clickhouse":
        # sqlglot casts to Nullable types; keys, values and times are never NULL (filtered, or a
        # missing value is a 0, as a sum counts it), and ClickHouse groups, joins and sorts
        # plain columns faster (a sixth of a 10^7-event look).
        text = _NOT_NULL.sub(r"AS \1) AS \2", text)
    epoch = EPOCH_SQL[dialect]
    text = _replace_calls(text, _EPOCH, epoch)
    text = _replace_calls(text, _LOG10, LOG10_SQL[dialect])
    for placeholder, relation in ((_EXPOSURES, source.exposures), (_EVENTS, source.events)):
        text = text.replace(placeholder, _relation(relation, dialect))
    return text


def _replace_calls(text: str, name: str, template: str) -> str:
    """`NAME(arg)` -> the template around `arg` (an expression: its parentheses balanced)."""
    out, rest = [], text
    while (i := rest.find(name + "(")) >= 0:
        start = j = i + len(name) + 1
        depth = 1
        while depth:
            depth += {"(": 1, ")": -1}.get(rest[j], 0)
            j += 1
        out += [rest[:i], template.format(rest[start : j - 1])]
        rest = rest[j:]
    return "".join(out) + rest


def _relation(relation: str, dialect: str) -> str:
    if is_query(relation):
        return f"({relation}) AS src"
    quote = "`" if dialect == "bigquery" else '"'
    return ".".join(f"{quote}{part}{quote}" for part in relation.split(".")) + " AS src"
