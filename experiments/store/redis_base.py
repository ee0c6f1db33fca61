"""Redis connection handling shared by the store's parts: URL parsing, key prefix, errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis

from experiments.errors import StoreError
from experiments.names import NAME_RE

DEFAULT_PREFIX = "abmesh:"


class RedisBase:
    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX, url: str = "") -> None:
        # Typed Any: with decode_responses=True every reply is str, which redis-py's
        # annotations (bytes | str) cannot express.
        self.client: Any = client
        self.prefix = prefix
        self.url = url
        self._index = f"{prefix}experiments"
        self._epoch = f"{prefix}epoch"

    @classmethod
    def from_url(cls, url: str) -> Self:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
        except ValueError as exc:
            raise StoreError(f"store URL {url!r} is not a valid Redis URL: {exc}") from None
        query = parse_qs(parts.query, keep_blank_values=True)
        prefix = query.pop("prefix", [DEFAULT_PREFIX])[0]
        if not NAME_RE.fullmatch(prefix.rstrip(":")):
            raise StoreError(f"store URL {url!r}: prefix {prefix!r} must be a name, e.g. abmesh:")
        if query:
            raise StoreError(f"store URL {url!r}: unknown option(s) {', '.join(sorted(query))}")
        if not parts.hostname:
            raise StoreError(f"store URL {url!r} names no host (e.g. redis://127.0.0.1:6379/0)")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise StoreError(f"store URL {url!r}: the database {db!r} must be a number")
        try:
            client = redis.Redis.from_url(
                urlunsplit(parts._replace(query="")),
                decode_responses=True,
                socket_connect_timeout=2.0,
                socket_timeout=5.0,
                health_check_interval=30,
            )
        except ValueError as exc:
            raise StoreError(f"store URL {url!r} is not a valid Redis URL: {exc}") from None
        return cls(client, prefix=prefix, url=url)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise StoreError(f"Redis store {self.url or self.prefix!r}: {exc}") from None

    def ping(self) -> None:
        with self._guard():
            self.client.ping()

    def close(self) -> None:
        self.client.close()
