"""Shared fixtures: real stores of every backend (SQLite, Redis, Redis Cluster), and the
controller rig (tests/controller_rig.py) on an SQLite store.

Redis: the server at $ABMESH_TEST_REDIS_URL (default 127.0.0.1:6379, which the service machines
run) when it answers, else a private `redis-server` on a free loopback port in a temp dir,
stopped by its own PID.  Redis Cluster: three masters on free loopback ports
(`tests.servers.start_redis_cluster`), started once per test process.  Every test gets its own
key prefix, deleted afterwards, so tests never see each other's keys.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from experiments.store import Store, open_store
from experiments.store.redis_base import CLUSTER_SCHEME
from tests.controller_rig import Rig
from tests.servers import start_redis, start_redis_cluster

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


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cluster = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster.url
    cluster.stop()


@contextmanager
def _prefixed(redis_url: str) -> Iterator[str]:
    """A store URL on the Redis (or cluster) at `redis_url` with a key prefix of its own,
    deleted after."""
    prefix = f"abmesh-test-{uuid.uuid4().hex[:12]}:"
    cluster = redis_url.startswith(f"{CLUSTER_SCHEME}://")
    yield f"{redis_url}{'/' if cluster else ''}?prefix={prefix}"
    client = _cluster_client(redis_url) if cluster else redis.Redis.from_url(redis_url)
    # Every key of the store starts with a hash tag that opens with the prefix.
    keys = list(client.scan_iter(match=f"{{{prefix}*", count=1000))
    for key in keys:  # one at a time: on a cluster they are in several slots
        client.delete(key)
    client.close()


def _cluster_client(url: str) -> RedisCluster:
    """A client of the cluster at `url` (redis+cluster://host:port,...), made without the
    store's URL parsing, which is under test."""
    addresses = [a.rpartition(":") for a in url.partition("://")[2].split(",")]
    nodes = [ClusterNode(host, int(port)) for host, _, port in addresses]  # type: ignore[no-untyped-call]
    return RedisCluster(startup_nodes=nodes, decode_responses=True)


@pytest.fixture
def redis_store_url(redis_url: str) -> Iterator[str]:
    with _prefixed(redis_url) as url:
        yield url


@pytest.fixture
def sqlite_store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'abmesh.db'}"


@pytest.fixture
def redis_cluster_store_url(redis_cluster_url: str) -> Iterator[str]:
    with _prefixed(redis_cluster_url) as url:
        yield url


BACKENDS = ["sqlite", "redis", "redis-cluster"]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param.replace('-', '_')}_store_url")
    return url


@pytest.fixture(scope="module", params=BACKENDS)
def module_store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One store of each backend for a whole module: for tests that share a service because
    none of them needs a fresh one (each would otherwise start its own, seconds apiece)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('module-store') / 'abmesh.db'}"
        return
    with _prefixed(request.getfixturevalue(f"{request.param.replace('-', '_')}_url")) as url:
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


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A PostgreSQL schema name of the test's own, dropped (with what it holds) after it."""
    from tests.warehouse_data import drop_postgres

    schema = f"abmesh_{uuid.uuid4().hex[:12]}"
    try:
        yield schema
    finally:
        drop_postgres(schema)
