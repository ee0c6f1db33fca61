"""Exposure logging off the request path: buffer in memory, append to the store's log in batches.

Each unit's first assignment into an experiment is its exposure.  A request only adds the unit
to an in-memory buffer (a dict insert); a background task appends the buffer to the store's log
every `flush_interval` seconds, or at once when `CHUNK` units wait, in chunks per experiment
(see `flush`), and the service flushes once more on a graceful shutdown.  An append is cheap
(the log is folded behind, see experiments.store.logfold), so while the store answers the buffer
drains faster than assignment fills it.  The store keeps the first exposure of a unit, so a
unit sent twice (two replicas, a retried flush) is still counted once; units this process has
appended are remembered (up to `KNOWN_CAP`) and not sent again.

Loss window: a crash (SIGKILL, OOM, power loss) loses what was buffered since the last
successful append: normally at most `flush_interval` seconds of new units, but while the store
is down everything buffered since it went down (failed batches go back to the buffer, which
holds at most `limit_bytes`, twice that for bulk senders; beyond that new units are dropped,
counted in
`abmesh_exposures_dropped_total` and logged).  Lost units are exposed again, and counted, the
next time they are assigned.  Bulk senders wait for `room` first (`POST /v1/assign` of a batch,
up to the events deadline), so a burst runs at the pace of the store instead of losing units;
`POST /v1/exposures` answers 503 with Retry-After while the buffer is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from assignment.background import stopped_or_woken
from experiments.folding import FoldPlan
from experiments.store import StatsStore
from experiments.store.logfold import as_exposures

log = logging.getLogger("abmesh.exposures")

CHUNK = 2000  # units per append; also how many waiting units start a flush at once
KNOWN_CAP = 1_000_000  # units remembered as appended, over all experiments (some 100 MB)
ENTRY_BYTES = 200  # what a buffered unit costs besides its id: dict slot, tuple, floats
# unit -> (variant served, time, spec generation, segment values as sorted pairs)
Units = dict[str, tuple[str, float, int, tuple[tuple[str, str], ...]]]
Batch = dict[tuple[str, str], tuple[FoldPlan, Units]]  # (experiment, phase) -> (plan, units)


class ExposureBuffer:
    def __init__(
        self,
        store: StatsStore,
        *,
        limit_bytes: int,
        on_appended: Callable[[str], None] = lambda experiment: None,
        on_flushed: Callable[[int], None] = lambda n: None,
        on_dropped: Callable[[int], None] = lambda n: None,
        on_error: Callable[[], None] = lambda: None,
        run_write: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self.store = store
        # Where the blocking write runs: the service's writer thread, or any thread.
        self.run_write = run_write or asyncio.to_thread
        self.limit_bytes = limit_bytes
        self.pending: Batch = {}
        self.bytes = 0
        self.known: dict[tuple[str, str], set[str]] = {}
        self._known_count = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._dropping = False
        self._on_appended = on_appended
        self._on_flushed = on_flushed
        self._on_dropped = on_dropped
        self._on_error = on_error

    @property
    def size(self) -> int:
        return sum(len(units) for _, units in self.pending.values())

    @property
    def full(self) -> bool:
        return self.bytes >= self.limit_bytes

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
        segments: tuple[tuple[str, str], ...] = (),
        bulk: bool = False,
    ) -> None:
        """Note an exposure: the variant served, when (default now), the generation of the
        spec that chose it (0: not known) and the unit's segment values.  Called on the event
        loop; no I/O.  A `bulk` sender has waited for `room` already: its whole batch goes in,
        up to twice the limit."""
        key = (experiment, phase)
        if unit in self.known.get(key, ()):
            return
        entry = self.pending.get(key)
        if entry is None:
            entry = self.pending[key] = (plan, {})
        units = entry[1]
        if unit in units:
            return
        if self.bytes >= (2 * self.limit_bytes if bulk else self.limit_bytes):
            self._drop(1)
            return
        units[unit] = (variant, time.time() if at is None else at, generation, segments)
        self.bytes += len(unit) + ENTRY_BYTES
        if self.full:
            self._room.clear()
            self._wake.set()
        if len(units) >= CHUNK:
            self._wake.set()

    def _drop(self, count: int) -> None:
        self._on_dropped(count)
        if not self._dropping:  # once per episode: it happens at request rate
            log.warning(
                "exposure buffer full (%d bytes): dropping new exposures until the store"
                " takes the backlog",
                self.bytes,
            )
        self._dropping = True

    def take(self) -> Batch:
        """Hand the buffered units to a flush.  They stay counted in `bytes` (they are still in
        memory) until `release`d after their append, so the buffer reads full while a flush to
        a store that is down is still failing."""
        batch, self.pending = self.pending, {}
        return batch

    def release(self, units: Units) -> None:
        self.bytes -= sum(len(unit) + ENTRY_BYTES for unit in units)
        if not self.full:
            self._room.set()

    async def room(self, timeout: float) -> None:
        """Wait, at most `timeout` seconds, until the buffer has room: bulk senders slow down
        to what the store takes instead of having their exposures dropped."""
        if self.full:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), timeout)

    def put_back(self, batch: Batch) -> None:
        """Return an unwritten batch (still counted in `bytes`); its earlier exposure times win
        over duplicates added meanwhile, which are then counted once."""
        for key, (plan, units) in batch.items():
            current = self.pending.setdefault(key, (plan, {}))[1]
            duplicates = {unit: current[unit] for unit in units if unit in current}
            current.update(units)
            self.release(duplicates)

    def _remember(self, key: tuple[str, str], units: Units) -> None:
        if self._known_count + len(units) > KNOWN_CAP:
            self.known, self._known_count = {}, 0  # forgetting only costs a re-send
        self.known.setdefault(key, set()).update(units)
        self._known_count += len(units)

    async def flush(self) -> None:
        """Append what is buffered, in chunks of at most CHUNK units: the writer thread is
        shared with event batches, which then wait behind one chunk, not behind the backlog of
        a whole outage."""
        batch = self.take()
        written = 0
        try:
            for (experiment, phase), (plan, units) in batch.items():
                while units:
                    chunk = dict(itertools.islice(units.items(), CHUNK))
                    await self.run_write(
                        self.store.append_exposures, experiment, phase, plan, as_exposures(chunk)
                    )
                    self._remember((experiment, phase), chunk)
                    self._on_appended(experiment)
                    for unit in chunk:
                        del units[unit]
                    self.release(chunk)
                    written += len(chunk)
        except Exception as exc:  # the store is down (or failing): keep the rest for later
            self._on_error()
            log.warning("exposure flush failed, will retry: %s", exc)
            self.put_back(batch)
        else:
            if self._dropping and not self.full:
                log.warning("exposure buffer has room again")
                self._dropping = False
        if written:
            self._on_flushed(written)

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """Flush every `interval` seconds, or as soon as a chunk waits, until `stop` is set."""
        while not await stopped_or_woken(stop, self._wake, interval):
            await self.flush()
