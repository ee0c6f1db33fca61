"""Store calls on request paths run in a bounded thread pool and are awaited for at most a
deadline; past it the caller applies its fallback (hash instead of sticky record, 503 for an
event batch) and the call, if it has not started, never runs.

Why a pool with a deadline rather than short socket timeouts on the Redis client: the deadline
covers everything a request waits for — the queue in front of the pool, SQLite's lock and busy
wait, a sticky lookup's two round trips, redis-py's retries (ten by default, with backoff) —
the same way for both backends; a 50 ms socket timeout would bound one round trip only, would
need a second Redis client (admin writes and snapshots legitimately take longer), and makes
redis-py drop and reopen a connection on every slow reply, a reconnect storm when the store is
slow but alive.  The client's own timeouts (a few seconds) still bound how long a pool thread
stays blocked on a store that has stopped answering, since a Python thread cannot be stopped.

While every thread of a pool is blocked past its deadline (a hung store: Redis under SIGSTOP,
a network black hole), a call fails at once instead of waiting its deadline in the queue: a
sick store costs a request nothing, and the blocked threads stay bounded by the pool's size.
They free themselves when the store answers or the client's timeout fires, and the next call
tries the store again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from experiments.errors import StoreError

T = TypeVar("T")


class StoreDeadlineError(StoreError):
    """The store did not answer within the deadline (a 503 with Retry-After on an API call)."""


class DeadlinePool:
    def __init__(self, workers: int, name: str) -> None:
        self.workers = workers
        self.overdue = 0  # calls still running past their deadline; only the event loop touches it
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def call(self, work: Callable[..., T], *args: Any, deadline: float | None = None) -> T:
        """`work(*args)` on a pool thread, awaited for at most `deadline` seconds (None: as long
        as it takes).  Raises StoreDeadlineError past it, or at once while every thread is
        blocked past its own."""
        if self.overdue >= self.workers:
            raise StoreDeadlineError(
                f"the store has not answered {self.overdue} earlier calls; not waiting for it"
            )
        future = self._pool.submit(work, *args)
        waiting = asyncio.wrap_future(future)
        if deadline is None:
            return await waiting
        done, _ = await asyncio.wait({waiting}, timeout=max(deadline, 0.0))
        if done:
            return waiting.result()
        if not future.cancel():  # running: it holds a thread until the store answers
            self.overdue += 1
            waiting.add_done_callback(self._finished)
        raise StoreDeadlineError(f"the store did not answer within {deadline * 1000:.0f} ms")

    def _finished(self, waiting: asyncio.Future[Any]) -> None:
        self.overdue -= 1
        if not waiting.cancelled():
            waiting.exception()  # nobody awaits it any more: its error is already answered

    def shutdown(self, *, wait: bool) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)
