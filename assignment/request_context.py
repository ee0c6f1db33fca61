"""The request id every log line written while handling a request carries: the client's (or
Envoy's) `x-request-id`, so the service's lines join the gateway's access log."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from experiments.logs import REQUEST_ID_RE, request_id

HEADER = b"x-request-id"


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = next((v for k, v in scope.get("headers", ()) if k == HEADER), None)
        value = given.decode("latin-1") if given is not None else ""
        if scope["type"] != "http" or not REQUEST_ID_RE.fullmatch(value):
            await self.app(scope, receive, send)
            return
        token = request_id.set(value)
        try:
            await self.app(scope, receive, send)
        finally:
            request_id.reset(token)
