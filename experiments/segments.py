"""Segments in the folded statistics.

A unit's segment values describe it before treatment: its exposure's values, and for an
attribute the exposure does not give, the first value an event carries.  An event logged
before the exposure (events are appended at once, exposures buffered) does not outweigh it;
once the unit is exposed and counted, a value it has is never moved.  An exposed unit counts
in its arm and, per attribute it has a value for, in the cell `variant@attribute=value`: the
same sums as the arm's (experiments.folding), under keys the arm-level readers skip.  Values
beyond a segment's cap are counted as `(other)`; the cap holds per store partition, so a
store with P partitions keeps at most P × max_values cells per attribute and arm."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from experiments.spec_segments import Segment

CELL = "@"  # between the variant and `attribute=value` in a cell's name


def cell_name(variant: str, attribute: str, value: str) -> str:
    return f"{variant}{CELL}{attribute}={value}"


def cells_of(arm: str, segments: Mapping[str, str]) -> tuple[str, ...]:
    """Where a unit of `arm` with these (resolved) segment values counts; () if unexposed."""
    if not arm:
        return ()
    return (arm, *(cell_name(arm, a, v) for a, v in sorted(segments.items())))


class Resolver:
    """Resolves the segment values a batch brings, against the values a partition counts
    already (read from its statistics' keys) and the ones this batch added."""

    def __init__(self, segments: Sequence[Segment], stats: Mapping[str, float]) -> None:
        self.rules = {s.name: s for s in segments}
        self.known: dict[str, set[str]] = {name: set() for name in self.rules}
        for key in stats:
            head, _, rest = key.partition("|")
            if rest == "n" and CELL in head:
                attribute, _, value = head.partition(CELL)[2].partition("=")
                if attribute in self.known:
                    self.known[attribute].add(value)

    def merge(
        self, held: dict[str, str], given: Sequence[tuple[str, str]], *, override: bool = False
    ) -> None:
        """Add to a unit's values those it has no value for yet (`override`: all of them)."""
        for attribute, value in given:
            rule = self.rules.get(attribute)
            if rule is not None and (override or attribute not in held):
                held[attribute] = rule.resolve(value, self.known[attribute])


def split_cells(stats: Mapping[str, float]) -> dict[str, dict[str, dict[str, float]]]:
    """The cells' statistics by attribute and value, each keyed as an arm's (`variant|...`),
    ready for `folding.export`."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, number in stats.items():
        head, _, rest = key.partition("|")
        variant, cell, segment = head.partition(CELL)
        if not cell:
            continue
        attribute, _, value = segment.partition("=")
        out.setdefault(attribute, {}).setdefault(value, {})[f"{variant}|{rest}"] = number
    return out


def as_pairs(segments: Any) -> tuple[tuple[str, str], ...]:
    """A mapping of segment values as the log keeps them: sorted (attribute, value) pairs."""
    return tuple(sorted((str(k), str(v)) for k, v in (segments or {}).items()))


def encode_pairs(pairs: Sequence[tuple[str, str]]) -> str:
    """As a log entry keeps them: '' for none (most entries), else JSON."""
    return json.dumps(pairs, separators=(",", ":")) if pairs else ""


def decode_pairs(text: str) -> tuple[tuple[str, str], ...]:
    return tuple((a, v) for a, v in json.loads(text)) if text else ()
