"""In-process cache of the experiment configs, so no request waits on the store.

The cache polls the store's config epoch (one cheap read) and reloads the experiments only when
it changed.  When the store is unreachable, or holds a config this version cannot read, the last
good configs stay in use: `/v1/assign` keeps answering, and `/readyz` reports why and the age of
what is served.  Before the first load nothing is known, not even which experiments exist, so
the API answers 503 (retry) rather than 404 (no such experiment) or an empty list.  A reload
replaces one immutable `Configs` object, so a reader sees either the old or the new configs,
never a mix; a lock keeps a slow reload from overwriting a newer one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from assignment.background import stopped
from experiments.errors import NotFoundError, StoreError
from experiments.folding import FoldPlan
from experiments.store import ExperimentRecord, State, Store, redact

log = logging.getLogger("abmesh.cache")


@dataclass(frozen=True)
class Configs:
    epoch: int | None = None
    experiments: dict[str, ExperimentRecord] = field(default_factory=dict)
    running: tuple[ExperimentRecord, ...] = ()  # by name
    plans: dict[str, FoldPlan] = field(default_factory=dict)  # how each experiment's events fold

    @classmethod
    def of(cls, epoch: int, records: Sequence[ExperimentRecord]) -> Configs:
        ordered = sorted(records, key=lambda r: r.name)
        return cls(
            epoch,
            {r.name: r for r in ordered},
            tuple(r for r in ordered if r.state is State.RUNNING),
            {r.name: FoldPlan.from_spec(r.spec) for r in ordered},
        )


class ConfigCache:
    def __init__(self, store: Store, on_error: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.on_error = on_error
        self.on_refresh: Callable[[float], None] = lambda at: None
        self.configs = Configs()
        self.loaded_at: float | None = None  # wall time of the last successful poll
        self.error: str | None = None  # why the last poll failed, while it keeps failing
        self._lock = threading.Lock()
        self.tried = asyncio.Event()

    @property
    def loaded(self) -> bool:
        return self.configs.epoch is not None

    @property
    def experiments(self) -> dict[str, ExperimentRecord]:
        return self.configs.experiments

    @property
    def running(self) -> tuple[ExperimentRecord, ...]:
        return self.configs.running

    def age(self) -> float:
        """Seconds since the configs were last confirmed current (inf before the first load)."""
        return float("inf") if self.loaded_at is None else time.time() - self.loaded_at

    def current(self) -> Configs:
        """The configs, once loaded (else a StoreError: a 503 with Retry-After)."""
        if not self.loaded:
            raise StoreError("experiment configs are not loaded yet: the store is unreachable")
        return self.configs

    def get(self, name: str) -> ExperimentRecord:
        record = self.current().experiments.get(name)
        if record is None:
            raise NotFoundError(f"experiment {name!r} does not exist")
        return record

    def refresh(self) -> bool:
        """Poll the store; reload if anything changed.  Returns False if that failed."""
        with self._lock:
            try:
                epoch = self.store.config_epoch()
                if epoch != self.configs.epoch:
                    self.configs = Configs.of(epoch, self.store.list_experiments())
            except Exception as exc:  # store down, or a config this version cannot read
                self.on_error()
                if self.error is None:
                    log.warning("configs not refreshed, serving the cached ones: %s", exc)
                # Shown by the unauthenticated /readyz: never a store password.
                self.error = redact(str(exc) or type(exc).__name__)
                return False
            if self.error is not None:
                log.info("configs refreshed again")
            self.error = None
            self.loaded_at = time.time()
            self.on_refresh(self.loaded_at)
            return True

    async def poll(self, interval: float, stop: asyncio.Event) -> None:
        """Refresh now, then every `interval` seconds until `stop` is set.  `tried` is set
        once the first refresh has answered, loaded or not."""
        while True:
            await asyncio.to_thread(self.refresh)
            self.tried.set()
            if await stopped(stop, interval):
                return
