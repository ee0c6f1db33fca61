"""Shared fixtures: real stores of both backends, and the controller rig (tests/controller_rig.py)
on an SQLite store.

Redis: the server at $ABMESH_TEST_REDIS_URL (default 127.0.0.1:6379, which the service machines
run) when it answers, else a private `redis-server` on a free loopback port in a temp dir,
stopped by its own PID.  Every
test gets its own key prefix, deleted afterwards, so tests never see each other's keys.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from experiments.store import Store, open_store
from tests.controller_rig import Rig
from tests.servers import start_redis

# Servers the tests start as processes (`abmesh serve` runs in a temp dir) import this
# checkout's code, not whichever copy of the package is installed (a git worktree is not).
ROOT = str(Path(__file__).resolve().parent.parent)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [ROOT, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != ROOT)]
)

DEFAULT_REDIS = os.environ.get("ABMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if _answers(DEFAULT_REDIS):
        yield DEFAULT_REDIS
        return
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield f"redis://127.0.0.1:{server.port}/0"
    server.stop()


@contextmanager
def _prefixed(redis_url: str) -> Iterator[str]:
    """A store URL on the Redis at `redis_url` with a key prefix of its own, deleted after."""
    prefix = f"abmesh-test-{uuid.uuid4().hex[:12]}:"
    yield f"{redis_url}?prefix={prefix}"
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_store_url(redis_url: str) -> Iterator[str]:
    with _prefixed(redis_url) as url:
        yield url


@pytest.fixture
def sqlite_store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'abmesh.db'}"


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_store_url")
    return url


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def module_store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One store of each backend for a whole module: for tests that share a service because
    none of them needs a fresh one (each would otherwise start its own, seconds apiece)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('module-store') / 'abmesh.db'}"
        return
    with _prefixed(request.getfixturevalue("redis_url")) as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    st = open_store(store_url)
    yield st
    st.close()

@pytest.fixture
def rig(sqlite_store_url: str, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(sqlite_store_url, tmp_path)
    yield r
    r.store.close()
