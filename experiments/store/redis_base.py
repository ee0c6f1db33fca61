"""Redis connection handling shared by the store's parts: URL parsing, key layout, errors.

Two URL forms:
  redis://[user:password@]host:port[/db][?prefix=p:]      (rediss:// for TLS)
  redis+cluster://[user:password@]host:port[,host:port...][?prefix=p:]
The second opens a Redis Cluster client (`redis.cluster.RedisCluster`) that learns the whole
cluster from any of the listed nodes.  A cluster has no database numbers: a path is refused.

Key layout: every key starts with a hash tag, so that a cluster puts together the keys one
transaction or script touches (see `redis` for the reasoning):
  {p}<part>            the catalog: experiment index, revisions, config epoch, controller
                       state documents, leases and audit logs: one slot per prefix
  {p<experiment>}:<part>  one experiment's sticky records, phases and snapshots: one slot
                       per experiment
  {p<experiment>#<k>}:<part>  partition k of its event log and of the statistics folded from
                       it (see `redis_stats`): one slot per experiment and partition
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Self
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit, urlunsplit

import redis
from redis.cluster import ClusterNode, RedisCluster

from experiments.errors import StoreError
from experiments.names import NAME_RE
from experiments.store.credentials import redact

DEFAULT_PREFIX = "abmesh:"
CLUSTER_SCHEME = "redis+cluster"
# The same on a single server and a cluster: a hung store fails a request, not the service.
_TIMEOUTS: dict[str, Any] = {
    "decode_responses": True,
    "socket_connect_timeout": 2.0,
    "socket_timeout": 5.0,
    "health_check_interval": 30,
}


class RedisBase:
    def __init__(
        self,
        connect: Callable[[], redis.Redis | RedisCluster],
        *,
        prefix: str = DEFAULT_PREFIX,
        url: str = "",
        password: str | None = None,
    ) -> None:
        """`connect` makes the client, on first use: a cluster client connects as it is made
        (to learn the slots), and a store must open while its server is down (the service
        then answers 503 until it is back)."""
        self._connect = connect
        self._client: Any = None
        self._connecting = threading.Lock()
        self.prefix = prefix
        self.url = redact(url)  # for messages: never the password
        self._password = password  # masked in redis-py's messages too, whatever they quote
        self._index = self.catalog_key("experiments")
        self._epoch = self.catalog_key("epoch")

    @property
    def client(self) -> Any:
        """The client, typed Any: with decode_responses=True every reply is str, which
        redis-py's annotations (bytes | str) cannot express.  Use it inside `_guard`: a
        cluster that cannot be reached raises there."""
        if self._client is None:
            with self._connecting:
                if self._client is None:
                    self._client = self._connect()
        return self._client

    def catalog_key(self, part: str) -> str:
        return f"{{{self.prefix}}}{part}"

    def experiment_key(self, experiment: str, part: str) -> str:
        return f"{{{self.prefix}{experiment}}}:{part}"

    def partition_key(self, experiment: str, partition: int | str, part: str) -> str:
        return f"{{{self.prefix}{experiment}#{partition}}}:{part}"

    @classmethod
    def from_url(cls, url: str, *, password: str | None = None) -> Self:
        """The store at `url`; `password` (from ABMESH_STORE_PASSWORD[_FILE]) is sent when it
        connects, unless the URL holds one: then it is refused, to say which one is used."""
        shown = redact(url, password)
        cluster = url.startswith(f"{CLUSTER_SCHEME}://")
        try:
            parts = urlsplit(url)
            if not cluster:
                parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
        except ValueError as exc:
            raise StoreError(f"store URL {shown!r} is not a valid Redis URL: {exc}") from None
        query = parse_qs(parts.query, keep_blank_values=True)
        prefix = query.pop("prefix", [DEFAULT_PREFIX])[0]
        if not NAME_RE.fullmatch(prefix.rstrip(":")):
            raise StoreError(f"store URL {shown!r}: prefix {prefix!r} must be a name, e.g. abmesh:")
        if query:
            raise StoreError(f"store URL {shown!r}: unknown option(s) {', '.join(sorted(query))}")
        userinfo, _, hosts = parts.netloc.rpartition("@")
        user, _, given_raw = userinfo.partition(":")
        given = unquote(given_raw) if ":" in userinfo else None
        if password is not None and given is not None:
            raise StoreError(
                f"store URL {shown!r} holds a password and ABMESH_STORE_PASSWORD[_FILE] is set:"
                " give it once"
            )
        secret = password or given
        connect: Callable[[], redis.Redis | RedisCluster]
        if cluster:
            connect = _cluster(shown, parts.path, hosts, user, secret)
        else:
            client = _single(shown, parts, password, given)
            connect = lambda: client  # noqa: E731 -- made already: redis.Redis connects lazily
        return cls(connect, prefix=prefix, url=url, password=secret)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except (redis.RedisError, redis.RedisClusterException) as exc:
            why = redact(str(exc), self._password)
            raise StoreError(f"Redis store {self.url or self.prefix!r}: {why}") from None

    def ping(self) -> None:
        with self._guard():
            self.client.ping()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _single(shown: str, parts: SplitResult, password: str | None, given: str | None) -> redis.Redis:
    if not parts.hostname:
        raise StoreError(f"store URL {shown!r} names no host (e.g. redis://127.0.0.1:6379/0)")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise StoreError(f"store URL {shown!r}: the database {db!r} must be a number")
    try:
        return redis.Redis.from_url(
            urlunsplit(parts._replace(query="")), password=password, **_TIMEOUTS
        )
    except ValueError as exc:
        why = redact(str(exc), password, given)
        raise StoreError(f"store URL {shown!r} is not a valid Redis URL: {why}") from None


def _cluster(
    shown: str, path: str, hosts: str, user: str, password: str | None
) -> Callable[[], RedisCluster]:
    if path.strip("/"):
        raise StoreError(
            f"store URL {shown!r}: a Redis Cluster has no database numbers; drop the path"
            f" {path!r} (e.g. {CLUSTER_SCHEME}://127.0.0.1:7000,127.0.0.1:7001/?prefix=abmesh:)"
        )
    nodes = []
    for address in hosts.split(","):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise StoreError(
                f"store URL {shown!r}: node {address!r} must be host:port"
                f" (e.g. {CLUSTER_SCHEME}://127.0.0.1:7000,127.0.0.1:7001)"
            )
        nodes.append(ClusterNode(host.strip("[]"), int(port)))  # type: ignore[no-untyped-call]
    username = unquote(user) or None
    return lambda: RedisCluster(
        startup_nodes=nodes, username=username, password=password, **_TIMEOUTS
    )
