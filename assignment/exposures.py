"""Exposure logging off the request path: buffer in memory, flush to the store in batches.

Each unit's first assignment into an experiment is its exposure.  A request only adds the unit
to an in-memory buffer (a dict insert); a background task writes the buffer to the store every
`flush_interval` seconds in chunks per experiment (see `flush`), and the service flushes once
more on a graceful shutdown.  The store keeps the first exposure of a unit, so a unit sent
twice (two replicas, a retried flush) is still counted once.

Loss window: a crash (SIGKILL, OOM, power loss) loses what was buffered since the last
successful flush: normally at most `flush_interval` seconds of new units, but while the store is
down everything buffered since it went down (failed batches go back to the buffer, which holds
at most `limit` units; beyond that new units are dropped and counted in
`abmesh_exposures_dropped_total`).  Lost units are exposed again, and counted, the next time
they are assigned.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from assignment.background import stopped
from experiments.folding import FoldPlan
from experiments.store import StatsStore

log = logging.getLogger("abmesh.exposures")

CHUNK = 2000  # units per store write: some 50 ms of the writer thread
Units = dict[str, tuple[str, float, int]]  # unit -> (variant served, time, spec generation)
Batch = dict[tuple[str, str], tuple[FoldPlan, Units]]  # (experiment, phase) -> (plan, units)


class ExposureBuffer:
    def __init__(
        self,
        store: StatsStore,
        *,
        limit: int,
        on_flushed: Callable[[int], None] = lambda n: None,
        on_dropped: Callable[[int], None] = lambda n: None,
        on_error: Callable[[], None] = lambda: None,
        run_write: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self.store = store
        # Where the blocking write runs: the service's writer thread, or any thread.
        self.run_write = run_write or asyncio.to_thread
        self.limit = limit
        self.pending: Batch = {}
        self.size = 0
        self._on_flushed = on_flushed
        self._on_dropped = on_dropped
        self._on_error = on_error

    def add(
        self,
        experiment: str,
        phase: str,
        plan: FoldPlan,
        unit: str,
        variant: str,
        *,
        at: float | None = None,
        generation: int = 0,
    ) -> None:
        """Note an exposure: the variant served, when (default now), and the generation of the
        spec that chose it (0: not known).  Called on the event loop; no I/O."""
        entry = self.pending.get((experiment, phase))
        if entry is None:
            entry = self.pending[experiment, phase] = (plan, {})
        units = entry[1]
        if unit in units:
            return
        if self.size >= self.limit:
            self._on_dropped(1)
            return
        units[unit] = (variant, time.time() if at is None else at, generation)
        self.size += 1

    def take(self) -> Batch:
        batch, self.pending, self.size = self.pending, {}, 0
        return batch

    def put_back(self, batch: Batch) -> None:
        """Return an unwritten batch; its earlier exposure times win over newer duplicates."""
        for key, (plan, units) in batch.items():
            current = self.pending.setdefault(key, (plan, {}))[1]
            for unit, exposure in units.items():
                if unit in current:
                    current[unit] = exposure
                elif self.size < self.limit:
                    current[unit] = exposure
                    self.size += 1
                else:
                    self._on_dropped(1)

    async def flush(self) -> None:
        """Write what is buffered, in chunks of at most CHUNK units: the writer thread is
        shared with event batches, which then wait behind one chunk, not behind the backlog of
        a whole outage."""
        batch = self.take()
        written = 0
        try:
            for (experiment, phase), (plan, units) in batch.items():
                while units:
                    chunk = dict(itertools.islice(units.items(), CHUNK))
                    await self.run_write(
                        self.store.record_exposures, experiment, phase, plan, chunk
                    )
                    for unit in chunk:
                        del units[unit]
                    written += len(chunk)
        except Exception as exc:  # the store is down (or failing): keep the rest for later
            self._on_error()
            log.warning("exposure flush failed, will retry: %s", exc)
            self.put_back(batch)
        if written:
            self._on_flushed(written)

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """Flush every `interval` seconds until `stop` is set."""
        while not await stopped(stop, interval):
            await self.flush()
