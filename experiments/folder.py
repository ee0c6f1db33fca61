"""The log folder as a loop of its own: every experiment's log folded into statistics until
stopped.  `abmesh fold` runs it; so does each service process, as its own child process
(`python -m experiments.folder`, the store URL in $ABMESH_STORE; ABMESH_FOLD=process):
folding is CPU-bound Python, and in a thread of the service it would hold the interpreter's
lock the requests need.

A child given `--parent PID` exits once that process is gone, so a service killed with
SIGKILL leaves no folder behind.  A store that fails (down, refusing) is retried every
`interval`, not fatal: a folder outlives a store restart.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from experiments.errors import StoreError
from experiments.logs import LogFormat, LogLevel, configure, resolve_format
from experiments.store import Store, open_store

log = logging.getLogger("abmesh.folder")


def fold_logs(
    store: Store,
    stop: threading.Event,
    *,
    interval: float = 0.2,
    once: bool = False,
    parent: int | None = None,
) -> int:
    """Fold until `stop` is set (or, `once`, one pass over every log, a store error raised);
    the entries folded."""
    total = 0
    failing = False
    while not stop.is_set():
        if parent is not None and os.getppid() != parent:
            log.warning("the process that started this folder (%d) is gone: stopping", parent)
            break
        folded = 0
        try:
            for record in store.list_experiments():
                while not stop.is_set() and (n := store.fold(record.name)):
                    folded += n
        except StoreError as exc:
            if once:
                raise
            if not failing:
                log.warning("folding stopped by the store, retrying: %s", exc)
            failing = True
        else:
            if failing:
                log.warning("folding again")
            failing = False
        total += folded
        if once or stop.wait(0 if folded else interval):
            break
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description="Fold the event logs of a store.")
    parser.add_argument("--store", default=None, help="default: $ABMESH_STORE")
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--parent", type=int, default=None)
    args = parser.parse_args()
    given = os.environ.get("ABMESH_LOG_FORMAT")
    configure(LogLevel(os.environ.get("ABMESH_LOG_LEVEL", "info").lower()),
              resolve_format(LogFormat(given.lower()) if given else None, sys.stderr))  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    store = open_store(args.store)
    try:
        fold_logs(store, stop, interval=args.interval, parent=args.parent)
    finally:
        store.close()


if __name__ == "__main__":
    main()
