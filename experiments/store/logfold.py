"""What every backend's event pipeline shares: the fold position, settling, and the blocking
convenience calls built on append + fold.

Writes (`append_exposures`, `append_events`) only append to the store's durable log and return
once it holds them; folders (`fold`, run by the service in the background, and by any reader
that settles) turn the log into statistics, behind.  `settle` folds until what was appended
before the call is in the statistics, or a time budget runs out: `phase_stats` settles first,
so a reader sees its own writes, and the decisions judge the data they were asked about.
"""

from __future__ import annotations

import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from experiments.foldbatch import Exposure
from experiments.folding import Event, FoldPlan
from experiments.store.protocol import FoldState, IngestResult

SETTLE_S = 10.0  # how long a settling read folds before it answers with what is folded
FOLD_BATCH = 5000  # log entries per fold transaction


def partition_of(unit: str, partitions: int) -> int:
    """The log partition of a unit: its exposure and its events are folded together."""
    return zlib.crc32(unit.encode()) % partitions if partitions > 1 else 0


def as_exposures(exposures: Mapping[str, Sequence[Any]]) -> list[Exposure]:
    """`unit -> (variant, time[, generation[, segments]])`, the shape the exposure buffer
    keeps (segments: sorted (attribute, value) pairs)."""
    return [
        Exposure(unit, value[0], float(value[1]), int(value[2]) if len(value) > 2 else 0,
                 tuple(value[3]) if len(value) > 3 else ())
        for unit, value in exposures.items()
    ]  # fmt: skip


class Settling(ABC):
    """`settle` and the blocking writes, over a backend's append, fold and fold_state."""

    @abstractmethod
    def append_exposures(
        self, experiment: str, phase: str, plan: FoldPlan, exposures: Sequence[Exposure]
    ) -> int: ...

    @abstractmethod
    def append_events(
        self, experiment: str, phase: str, plan: FoldPlan, events: Sequence[Event]
    ) -> IngestResult: ...

    @abstractmethod
    def fold(self, experiment: str, *, limit: int = FOLD_BATCH) -> int: ...

    @abstractmethod
    def fold_state(self, experiment: str) -> FoldState: ...

    @abstractmethod
    def log_length(self, experiment: str) -> int:
        """Entries kept in the experiment's log, folded or not."""

    def log_time(self) -> float:
        """Now, on the clock that stamps the log's entries."""
        return time.time()

    def settle(self, experiment: str, *, timeout: float = SETTLE_S) -> FoldState:
        """Fold until every entry appended before this call is folded, or `timeout` passes;
        returns how far behind the statistics still are.  Partitions another folder holds
        are waited for, not folded twice."""
        since, until = self.log_time(), time.monotonic() + timeout
        while True:
            folded = self.fold(experiment)
            state = self.fold_state(experiment)
            done = state.oldest_pending is None or state.oldest_pending > since
            if done or time.monotonic() >= until:
                return state
            if not folded:
                time.sleep(0.005)  # another folder holds the rest: let it finish

    def record_exposures(
        self, experiment: str, phase: str, plan: FoldPlan, exposures: Mapping[str, Sequence[Any]]
    ) -> int:
        """Append the exposures and settle; returns how many units were new in the phase."""
        new = self.append_exposures(experiment, phase, plan, as_exposures(exposures))
        self.settle(experiment)
        return new

    def ingest_events(
        self, experiment: str, phase: str, plan: FoldPlan, events: Sequence[Event]
    ) -> IngestResult:
        """Append the events and settle."""
        result = self.append_events(experiment, phase, plan, events)
        self.settle(experiment)
        return result
