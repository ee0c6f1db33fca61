"""`@bounded`: a blocking route (store reads and writes, a report, a verdict) runs on the
service's API pool and is awaited for at most `api_timeout` seconds, queue included; past it the
client gets a 503 with Retry-After (assignment.app maps StoreDeadlineError) instead of waiting
on a hung store for as long as the store client retries (tens of seconds).

The route keeps its plain `def` signature, which FastAPI reads through `__wrapped__` for its
parameters and OpenAPI; it must take `state: StateDep`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from assignment.service import ServiceState

P = ParamSpec("P")
T = TypeVar("T")


def bounded(route: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(route)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        state = kwargs["state"]
        if not isinstance(state, ServiceState):
            raise TypeError(f"{route.__name__}: a bounded route takes `state: StateDep`")
        work: Callable[[], T] = functools.partial(route, *args, **kwargs)
        return await state.api.call(work, deadline=state.settings.api_timeout)

    return run


def bounded_call(state: ServiceState, work: Callable[..., T], *args: Any) -> Awaitable[T]:
    """One blocking call of an `async` route under the same pool and deadline."""
    return state.api.call(work, *args, deadline=state.settings.api_timeout)
