"""Redis connection handling shared by the store's parts: URL parsing, key prefix, errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import redis

from experiments.errors import StoreError
from experiments.names import NAME_RE
from experiments.store.credentials import redact

DEFAULT_PREFIX = "abmesh:"


class RedisBase:
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        url: str = "",
        password: str | None = None,
    ) -> None:
        # Typed Any: with decode_responses=True every reply is str, which redis-py's
        # annotations (bytes | str) cannot express.
        self.client: Any = client
        self.prefix = prefix
        self.url = redact(url)  # for messages: never the password
        self._password = password  # masked in redis-py's messages too, whatever they quote
        self._index = f"{prefix}experiments"
        self._epoch = f"{prefix}epoch"

    @classmethod
    def from_url(cls, url: str, *, password: str | None = None) -> Self:
        """The store at `url`; `password` (from ABMESH_STORE_PASSWORD[_FILE]) is sent when it
        connects, unless the URL holds one: then it is refused, to say which one is used."""
        shown = redact(url, password)
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
        except ValueError as exc:
            raise StoreError(f"store URL {shown!r} is not a valid Redis URL: {exc}") from None
        query = parse_qs(parts.query, keep_blank_values=True)
        prefix = query.pop("prefix", [DEFAULT_PREFIX])[0]
        if not NAME_RE.fullmatch(prefix.rstrip(":")):
            raise StoreError(f"store URL {shown!r}: prefix {prefix!r} must be a name, e.g. abmesh:")
        if query:
            raise StoreError(f"store URL {shown!r}: unknown option(s) {', '.join(sorted(query))}")
        if not parts.hostname:
            raise StoreError(f"store URL {shown!r} names no host (e.g. redis://127.0.0.1:6379/0)")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise StoreError(f"store URL {shown!r}: the database {db!r} must be a number")
        given = unquote(parts.password) if parts.password is not None else None
        if password is not None and given is not None:
            raise StoreError(
                f"store URL {shown!r} holds a password and ABMESH_STORE_PASSWORD[_FILE] is set:"
                " give it once"
            )
        try:
            client = redis.Redis.from_url(
                urlunsplit(parts._replace(query="")),
                password=password,
                decode_responses=True,
                socket_connect_timeout=2.0,
                socket_timeout=5.0,
                health_check_interval=30,
            )
        except ValueError as exc:
            why = redact(str(exc), password, given)
            raise StoreError(f"store URL {shown!r} is not a valid Redis URL: {why}") from None
        return cls(client, prefix=prefix, url=url, password=password or given)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            why = redact(str(exc), self._password)
            raise StoreError(f"Redis store {self.url or self.prefix!r}: {why}") from None

    def ping(self) -> None:
        with self._guard():
            self.client.ping()

    def close(self) -> None:
        self.client.close()
