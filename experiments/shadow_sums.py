"""The sufficient statistics of a shadow phase: what the stable model and the candidate
predicted for the same requests, folded pair by pair (experiments.store keeps them; the
comparison is analysis.shadow).

A pair is the stable model's and the candidate's prediction for one request (Envoy's
`x-request-id` reaches the primary and the mirror alike).  Scores are binned over the phase's
`score_range` (plus one bin below and one above it) for the two arms' distributions; the
difference d = candidate − stable is summed for its mean; labels, when both carry one, count
disagreements.  Predictions whose partner never came within the pairing window are counted
per variant as unpaired.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

BINS = 1000  # over score_range: the CDFs are exact at bin edges, off by ≤ one bin's mass between


@dataclass
class ShadowSums:
    low: float = 0.0  # score_range
    high: float = 1.0
    pairs: int = 0
    labelled: int = 0  # pairs where both predictions carry a label
    disagreements: int = 0  # ... and the labels differ
    scored: int = 0  # pairs where both carry a score
    sum_d: float = 0.0  # Σ (candidate − stable score) over scored pairs
    sum_d2: float = 0.0
    sum_stable: float = 0.0  # Σ stable score over scored pairs (for a relative shift)
    # Scored pairs with a score outside [low, high] (or not finite): the score-shift sequence
    # assumes d is bounded by the range, so any such pair voids it.
    outside: int = 0
    # Scored pairs whose two scores differ: the two empirical CDFs differ at no point by more
    # than this share, which bounds the distribution distance where bins cannot (one score).
    unequal: int = 0
    # Per arm, BINS + 2 counts: below low, the bins of [low, high), at or above high.
    hist: dict[str, list[int]] = field(default_factory=dict)
    # Per arm: [n, Σ latency_ms, Σ latency_ms²] of predictions that reported a latency.
    latency: dict[str, list[float]] = field(default_factory=dict)
    unpaired: dict[str, int] = field(default_factory=dict)  # expired, per arm (stable, candidate)
    # Per arm, binned like `hist`: the scores of every prediction, paired or not, so the arms'
    # own traffic can be compared in the phases after the shadow (the score-drift guardrail).
    traffic: dict[str, list[int]] = field(default_factory=dict)
    pending: int = 0  # predictions waiting for their partner now

    def bin_of(self, score: float) -> int:
        if score < self.low:
            return 0
        if score >= self.high:
            return BINS + 1
        return 1 + min(BINS - 1, int((score - self.low) / (self.high - self.low) * BINS))

    def edges(self) -> list[float]:
        """The upper edge of each of the BINS + 2 bins (the last is +inf)."""
        width = (self.high - self.low) / BINS
        return [self.low + i * width for i in range(BINS + 1)] + [math.inf]

    def add_pair(self, stable: dict[str, Any], candidate: dict[str, Any]) -> None:
        """Fold one pair: each side a prediction {score?, label?, latency_ms?}."""
        self.pairs += 1
        if stable.get("label") is not None and candidate.get("label") is not None:
            self.labelled += 1
            self.disagreements += int(stable["label"] != candidate["label"])
        s, c = stable.get("score"), candidate.get("score")
        if s is not None and c is not None:
            self.scored += 1
            self.sum_d += c - s
            self.sum_d2 += (c - s) ** 2
            self.sum_stable += s
            self.outside += int(not (self.low <= s <= self.high and self.low <= c <= self.high))
            self.unequal += int(c != s)
            for arm, score in (("stable", s), ("candidate", c)):
                self.hist.setdefault(arm, [0] * (BINS + 2))[self.bin_of(score)] += 1
        for arm, p in (("stable", stable), ("candidate", candidate)):
            ms = p.get("latency_ms")
            if ms is not None:
                n, total, squares = self.latency.get(arm, [0.0, 0.0, 0.0])
                self.latency[arm] = [n + 1, total + ms, squares + ms * ms]

    def add_score(self, arm: str, score: float) -> None:
        self.traffic.setdefault(arm, [0] * (BINS + 2))[self.bin_of(score)] += 1

    def merge(self, other: ShadowSums) -> ShadowSums:
        """The sums of both (same score range): partitions of a store add up."""
        out = ShadowSums(self.low, self.high)
        for name in ("pairs", "labelled", "disagreements", "scored", "sum_d", "sum_d2",
                     "sum_stable", "outside", "unequal", "pending"):  # fmt: skip
            setattr(out, name, getattr(self, name) + getattr(other, name))
        for mine, theirs, merged in ((self.hist, other.hist, out.hist),
                                     (self.traffic, other.traffic, out.traffic)):  # fmt: skip
            for arm in {*mine, *theirs}:
                a, b = mine.get(arm, [0] * (BINS + 2)), theirs.get(arm, [0] * (BINS + 2))
                merged[arm] = [x + y for x, y in zip(a, b, strict=True)]
        for arm in {*self.latency, *other.latency}:
            a2, b2 = self.latency.get(arm, [0.0] * 3), other.latency.get(arm, [0.0] * 3)
            out.latency[arm] = [x + y for x, y in zip(a2, b2, strict=True)]
        for v in {*self.unpaired, *other.unpaired}:
            out.unpaired[v] = self.unpaired.get(v, 0) + other.unpaired.get(v, 0)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShadowSums:
        """Sums stored before `unequal` existed claim nothing: every scored pair counts as
        unequal (0 would claim identical scores)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known.setdefault("unequal", known.get("scored", 0))
        return cls(**known)
