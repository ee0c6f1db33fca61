"""The service's background loops share one way to wait: sleep, unless asked to stop."""

from __future__ import annotations

import asyncio


async def stopped(stop: asyncio.Event, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `stop`; True if it was set.  Loops end on it instead of
    being cancelled, so a write in progress (a flush, a snapshot) is never cut off halfway."""
    try:
        await asyncio.wait_for(stop.wait(), timeout)
    except TimeoutError:
        return False
    return True


async def stopped_or_woken(stop: asyncio.Event, wake: asyncio.Event, timeout: float) -> bool:
    """Like `stopped`, but also return early (False) when `wake` is set; clears `wake`."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
    wake.clear()
    return stop.is_set()
