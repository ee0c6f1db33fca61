"""What the routes share: settings, store, config cache, exposure buffer, metrics, and the
assignment step that ties them together."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from assignment.assign import Assignment, assign, assign_many
from assignment.background import stopped
from assignment.cache import ConfigCache
from assignment.config import Settings
from assignment.deadline import DeadlinePool
from assignment.exposures import ExposureBuffer
from assignment.folding import Folding
from assignment.telemetry import Telemetry
from experiments.errors import StoreError
from experiments.folding import FoldPlan
from experiments.reporting import take_snapshot
from experiments.store import ExperimentRecord, State, Store

log = logging.getLogger("abmesh.service")
T = TypeVar("T")
# Sticky lookups are short I/O waits; more threads than this would only be blocked ones when
# the store hangs (see assignment.deadline).
LOOKUP_THREADS = 8
API_THREADS = 8


@dataclass
class ServiceState:
    settings: Settings
    store: Store
    cache: ConfigCache = field(init=False)
    telemetry: Telemetry = field(init=False)
    exposures: ExposureBuffer = field(init=False)

    def __post_init__(self) -> None:
        # One thread does the CPU-heavy store writes (event batches, exposure flushes): they
        # queue instead of several threads fighting over the GIL and the store's write lock.
        # An event batch waits there at most its deadline, queue included.
        self.writer = DeadlinePool(1, "abmesh-writer")
        # Sticky lookups and the configs an event batch needs, each under its deadline.
        self.lookups = DeadlinePool(LOOKUP_THREADS, "abmesh-lookup")
        # The admin, data, report and verdict routes (assignment.routes.bounded): their own
        # threads, so a hung store holds none of the sticky lookups' or the event loop's.
        self.api = DeadlinePool(API_THREADS, "abmesh-api")
        self.warmed_up = False  # the analysis stack is imported and has run once
        self.sticky_failing = False  # the last sticky lookup fell back to the hash
        self.cache = ConfigCache(self.store)
        self.telemetry = Telemetry(config_age=self.cache.age)
        store_errors = self.telemetry.store_errors
        self.cache.on_error = store_errors.labels("config").inc
        self.cache.on_refresh = self.telemetry.config_refreshed.set
        self.folding = Folding(
            self.store,
            self.telemetry.registry,
            store_errors.labels("fold").inc,
            lambda: list(self.cache.configs.experiments),
            child=self.settings.store_url if self.settings.fold == "process" else None,
        )
        self.exposures = ExposureBuffer(
            self.store,
            on_appended=self.folding.appended,
            limit_bytes=self.settings.exposure_buffer_bytes,
            on_flushed=self.telemetry.exposures_flushed.inc,
            on_dropped=self.telemetry.exposures_dropped.inc,
            on_error=store_errors.labels("exposures").inc,
            run_write=self.write,
        )

    async def write(self, work: Callable[..., T], *args: Any, deadline: float | None = None) -> T:
        """Run `work(*args)` on the writer thread, waiting at most `deadline` seconds."""
        return await self.writer.call(work, *args, deadline=deadline)

    async def assign(
        self,
        record: ExperimentRecord,
        unit: str,
        headers: Mapping[str, str] | None,
        segments: tuple[tuple[str, str], ...] = (),
    ) -> Assignment:
        return (await self.assign_many(record, [unit], headers, segments=segments))[0]

    async def assign_many(
        self,
        record: ExperimentRecord,
        units: Sequence[str],
        headers: Mapping[str, str] | None,
        *,
        bulk: bool = False,
        segments: tuple[tuple[str, str], ...] = (),
    ) -> list[Assignment]:
        """Assign, count, and buffer the exposures (`bulk`: a batch whose sender waited for
        room; see ExposureBuffer.add).  Only sticky specs touch the store (in a thread); if it
        is down, or slower than `sticky_timeout`, they fall back to the plain hash rather than
        fail or wait."""
        spec, active = record.effective_spec, record.state is State.RUNNING
        if spec.sticky and active:
            try:
                results = await self.lookups.call(
                    partial(assign_many, headers=headers, sticky=self.store, active=active),
                    spec,
                    units,
                    deadline=self.settings.sticky_timeout,
                )
            except StoreError as exc:
                self.telemetry.store_errors.labels("sticky").inc()
                if not self.sticky_failing:  # once per outage: it fails at request rate
                    log.warning(
                        "sticky records unavailable, assigning by hash: %s",
                        exc,
                        extra={"experiment": spec.name},
                    )
                self.sticky_failing = True
                results = assign_many(spec, units, headers=headers, active=active)
            else:
                if self.sticky_failing:
                    log.warning("sticky records available again")
                self.sticky_failing = False
        elif len(units) == 1:
            results = [assign(spec, units[0], headers=headers, active=active)]
        else:
            results = assign_many(spec, units, headers=headers, active=active)
        counter, buffer = self.telemetry.assignments, self.exposures
        plan = self.cache.configs.plans.get(spec.name) or FoldPlan.from_spec(spec)
        for unit, a in zip(units, results, strict=True):
            counter.labels(a.experiment, a.variant).inc()
            if a.in_experiment:
                buffer.add(
                    a.experiment,
                    record.phase,
                    plan,
                    unit,
                    a.variant,
                    generation=record.generation,
                    segments=segments,
                    bulk=bulk,
                )
        return results

    async def housekeeping(self, stop: asyncio.Event) -> None:
        """Snapshot every running experiment each `snapshot_interval` seconds (on a shared
        schedule, so replicas write one snapshot; 0: no snapshots) and drop raw events past
        their retention (hourly when there are no snapshots)."""
        interval = self.settings.snapshot_interval
        while not await stopped(stop, interval if interval > 0 else 3600.0):
            try:
                await asyncio.to_thread(self._housekeep, interval)
            except Exception as exc:  # the store is down: try again next time
                self.telemetry.store_errors.labels("snapshot").inc()
                log.warning("snapshots not taken: %s", exc)

    def _housekeep(self, interval: float) -> None:
        for record in self.cache.running if interval > 0 else ():
            take_snapshot(self.store, record, bucket=interval)
        self.store.purge_events(time.time() - self.settings.event_retention_days * 86400)
