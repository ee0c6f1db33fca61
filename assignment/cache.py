"""In-process cache of the experiment configs, so no request waits on the store.

The cache polls the store's config epoch (one cheap read) and reloads the experiments only when
it changed.  When the store is unreachable the last good configs stay in use: `/v1/assign`
keeps answering, and `/readyz` reports the outage and the age of what is served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from experiments.errors import NotFoundError, StoreError
from experiments.folding import FoldPlan
from experiments.store import ExperimentRecord, ExperimentStatus, Store

log = logging.getLogger("abmesh.cache")


class ConfigCache:
    def __init__(self, store: Store, on_error: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.on_error = on_error
        self.experiments: dict[str, ExperimentRecord] = {}
        self.running: tuple[ExperimentRecord, ...] = ()  # by name; derived once per reload
        self.plans: dict[str, FoldPlan] = {}  # how each experiment's events fold
        self.epoch: int | None = None
        self.loaded_at: float | None = None  # wall time of the last successful poll
        self.error: str | None = None  # why the last poll failed, while it keeps failing

    @property
    def loaded(self) -> bool:
        return self.epoch is not None

    def age(self) -> float:
        """Seconds since the configs were last confirmed current (inf before the first load)."""
        return float("inf") if self.loaded_at is None else time.time() - self.loaded_at

    def get(self, name: str) -> ExperimentRecord:
        record = self.experiments.get(name)
        if record is None:
            raise NotFoundError(f"experiment {name!r} does not exist")
        return record

    def refresh(self, *, force: bool = False) -> bool:
        """Poll the store; reload if anything changed.  Returns False if the store failed."""
        try:
            epoch = self.store.config_epoch()
            if force or epoch != self.epoch:
                records = self.store.list_experiments()
                # One assignment swaps the whole mapping: readers never see half a reload.
                self.plans = {r.name: FoldPlan.from_spec(r.spec) for r in records}
                self.experiments = {r.name: r for r in records}
                self.running = tuple(
                    r
                    for r in sorted(records, key=lambda r: r.name)
                    if r.status is ExperimentStatus.RUNNING
                )
                self.epoch = epoch
        except StoreError as exc:
            self.on_error()
            if self.error is None:
                log.warning("store unreachable, serving cached configs: %s", exc)
            self.error = str(exc)
            return False
        if self.error is not None:
            log.info("store reachable again")
        self.error = None
        self.loaded_at = time.time()
        return True

    async def poll(self, interval: float) -> None:
        """Refresh every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.refresh)
