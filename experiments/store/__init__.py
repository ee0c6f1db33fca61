"""Stores: where experiments, sticky records (and later events, stats and state) live.

`open_store(url)` picks the backend from the URL scheme and refuses unknown ones:
`sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `redis://host:port/db[?prefix=p:]`,
`redis+cluster://host:port[,host:port...][/?prefix=p:]` (a Redis Cluster; see `redis_base`).
A Redis password may be in the URL or in ABMESH_STORE_PASSWORD[_FILE]; no message ever shows
it (`credentials.redact`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from experiments.errors import StoreError
from experiments.status import DEFAULT_PHASE, State, Status
from experiments.store.credentials import redact, store_password
from experiments.store.protocol import (
    ExperimentRecord,
    ExperimentStore,
    IngestResult,
    PutResult,
    Snapshot,
    StatsStore,
    StickyStore,
    Store,
)

DEFAULT_DB_NAME = "abmesh.db"


def default_store_url() -> str:
    """$ABMESH_STORE, else an SQLite file in $ABMESH_DATA_DIR (default: the working directory)."""
    url = os.environ.get("ABMESH_STORE")
    if url:
        return url
    data_dir = Path(os.environ.get("ABMESH_DATA_DIR") or ".")
    return f"sqlite:///{data_dir / DEFAULT_DB_NAME}"


def _open_sqlite(url: str) -> Store:
    from experiments.store.sqlite import SQLiteStore

    path = url.removeprefix("sqlite://")
    if not path.startswith("/") or path == "/":
        raise StoreError(
            f"store URL {redact(url)!r}: use sqlite:///relative.db or sqlite:////abs/path.db"
        )
    if path[1:] == ":memory:" or "?" in path:
        raise StoreError(
            f"store URL {redact(url)!r}: an in-memory or URI database keeps nothing; name a file"
        )
    return SQLiteStore(path[1:], url=url)


def _open_redis(url: str) -> Store:
    from experiments.store.redis import RedisStore

    return RedisStore.from_url(url, password=store_password())


_BACKENDS: dict[str, Callable[[str], Store]] = {
    "sqlite": _open_sqlite,
    "redis": _open_redis,
    "rediss": _open_redis,
    "redis+cluster": _open_redis,
}


def open_store(url: str | None = None) -> Store:
    """Open the store at `url` (default: `default_store_url()`)."""
    url = url or default_store_url()
    scheme, sep, _ = url.partition("://")
    backend = _BACKENDS.get(scheme) if sep else None
    if backend is None:
        known = ", ".join(f"{s}://" for s in _BACKENDS)
        raise StoreError(
            f"store URL {redact(url)!r} has an unknown scheme; expected one of {known}"
        )
    return backend(url)


__all__ = [
    "DEFAULT_PHASE",
    "ExperimentRecord",
    "ExperimentStore",
    "IngestResult",
    "PutResult",
    "Snapshot",
    "State",
    "StatsStore",
    "Status",
    "StickyStore",
    "Store",
    "default_store_url",
    "open_store",
    "redact",
]
