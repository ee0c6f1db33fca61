"""JSON bodies that repeat a key are refused (422), as YAML specs are (experiments.strict_yaml).

`json.loads` keeps the last of repeated keys, so a PUT with `"coverage": 0.05` and then
`"coverage": 1` would silently enrol everyone.  RFC 8259 says names SHOULD be unique and that
receivers differ on which one wins; refusing is the only answer that cannot surprise anyone.
Routers that take a JSON body use `route_class=StrictJSONRoute`; FastAPI then turns the
decode error into its usual 422 `json_invalid`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class _RepeatedKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKeyError(key)
        out[key] = value
    return out


def loads_unique(text: str | bytes) -> Any:
    """`json.loads`, raising JSONDecodeError at a repeated key (at its last occurrence)."""
    try:
        return json.loads(text, object_pairs_hook=_unique)
    except _RepeatedKeyError as exc:
        doc = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        where = doc.rfind(json.dumps(exc.key, ensure_ascii=False))
        raise json.JSONDecodeError(f"duplicate key {exc.key!r}", doc, max(where, 0)) from None


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_unique(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    request_class: type[StrictJSONRequest] = StrictJSONRequest  # a route may decode its own way

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        request_class = self.request_class

        async def strict(request: Request) -> Response:
            return await handler(request_class(request.scope, request.receive))

        return strict
