"""The service's folder.  By default (ABMESH_FOLD=process) a child process of each service
process (experiments.folder), restarted if it dies, stopped with the service, and gone by
itself if the service is killed: folding is CPU-bound Python, which in a thread would take the
interpreter's lock from the requests (at 1e6 units an ingest worker acknowledged half as many
events with its folder in a thread; benchmarks/events_ingest.py).  With ABMESH_FOLD=thread a
thread of this process folds what it appended at once and sweeps every experiment's log now
and then.  Several folders fold side by side: each partition of a log is folded by whichever
takes its lease first (experiments.store.logfold).  Either way this keeps the lag gauges
current."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import Gauge

from assignment.background import stopped_or_woken
from experiments.store import Store

log = logging.getLogger("abmesh.folding")

SWEEP_S = 2.0  # how often every experiment's log is looked at, and the gauges set
GATHER_S = 0.1  # after an append, wait this long for more before folding
PASSES = 10  # fold passes over one experiment's partitions before the next experiment's turn
STOP_S = 10.0  # how long a stopping folder process may finish its batch before it is killed


class Folding:
    def __init__(
        self,
        store: Store,
        registry: Any,
        on_error: Any,
        names: Any,
        *,
        sweep_s: float = SWEEP_S,
        child: str | None = None,
    ) -> None:
        self.store = store
        # The store URL of a child folder process; None: fold in a thread of this process.
        self.child = child
        self._process: subprocess.Popen[bytes] | None = None
        self.names = names  # () -> the experiments to sweep
        self.on_error = on_error
        self.sweep_s = sweep_s
        self.due: set[str] = set()
        self._wake = asyncio.Event()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="abmesh-folder")
        self.pending = Gauge(
            "abmesh_fold_pending_entries",
            "Log entries appended and not folded yet, by experiment.",
            ["experiment"],
            multiprocess_mode="max",
            registry=registry,
        )
        self.lag = Gauge(
            "abmesh_fold_lag_seconds",
            "Age of the oldest log entry not folded yet (0: none), by experiment.",
            ["experiment"],
            multiprocess_mode="max",
            registry=registry,
        )
        self.length = Gauge(
            "abmesh_log_entries",
            "Entries kept in the log (folded ones until the retention), by experiment.",
            ["experiment"],
            multiprocess_mode="max",
            registry=registry,
        )

    def appended(self, experiment: str) -> None:
        """Note that `experiment` has new entries (called on the event loop)."""
        if not self.child:
            self.due.add(experiment)
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        if self.child:
            await self._supervise(stop)
            return
        loop = asyncio.get_running_loop()
        swept = 0.0
        while not await stopped_or_woken(stop, self._wake, self.sweep_s):
            # Let appends gather: a fold costs some round trips per partition whatever its
            # size, so folding every batch on its own would spend more on them than on folding.
            await asyncio.sleep(GATHER_S)
            names, self.due = self.due, set()
            sweep = time.monotonic() - swept >= self.sweep_s
            if sweep:
                names |= set(self.names())
                swept = time.monotonic()
            for name in names:
                try:
                    more = await loop.run_in_executor(self._thread, self._fold, name, sweep)
                except Exception as exc:  # the store is down: the next sweep retries
                    self.on_error()
                    log.warning("log of %s not folded: %s", name, exc)
                    break
                if more:  # the others' turn first
                    self.appended(name)

    def _fold(self, name: str, measure: bool) -> bool:
        """Fold some batches of the experiment's log; True if there may be more."""
        passes = 0
        while passes < PASSES and self.store.fold(name):
            passes += 1
        more = passes == PASSES
        if measure:
            state = self.store.fold_state(name)
            self.pending.labels(name).set(state.pending)
            self.lag.labels(name).set(state.lag_s())
            self.length.labels(name).set(self.store.log_length(name))
        return more

    async def _supervise(self, stop: asyncio.Event) -> None:
        """Keep a folder process running until `stop`, and the gauges current."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                if self._process is None or self._process.poll() is not None:
                    if self._process is not None:
                        self.on_error()
                        log.warning("folder process exited (%s): starting another",
                                    self._process.returncode)  # fmt: skip
                    self._process = self._start()
                try:
                    await loop.run_in_executor(self._thread, self._measure)
                except Exception as exc:  # the store is down: the gauges wait for it
                    self.on_error()
                    log.warning("fold lag not measured: %s", exc)
                if await stopped_or_woken(stop, asyncio.Event(), self.sweep_s):
                    return
        finally:
            if self._process is not None:
                await loop.run_in_executor(self._thread, self._stop_process, self._process)

    def _start(self) -> subprocess.Popen[bytes]:
        # The URL goes in the environment: on the command line `ps` would show its password.
        assert self.child is not None
        command = [sys.executable, "-m", "experiments.folder", "--parent", str(os.getpid())]
        env = {**os.environ, "ABMESH_STORE": self.child}
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, env=env)

    @staticmethod
    def _stop_process(process: subprocess.Popen[bytes]) -> None:
        process.terminate()
        try:
            process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _measure(self) -> None:
        for name in self.names():
            state = self.store.fold_state(name)
            self.pending.labels(name).set(state.pending)
            self.lag.labels(name).set(state.lag_s())
            self.length.labels(name).set(self.store.log_length(name))

    def shutdown(self) -> None:
        self._thread.shutdown(wait=True)
