"""The body of `POST /v1/events`, decoded by `fast_events.decode` when it can be.

FastAPI calls `Request.json()` exactly when it would parse the body as JSON (by its content
type), so the fast decoding hooks in there and every other case (no body, another content
type) goes on as for any route.  When the fast decoding declines, `loads_unique` decodes the
body as on every StrictJSONRoute, with the same 422 for bad JSON and repeated keys.  When it
succeeds, the typed events are kept on the request for the handler (`typed_events`) and the
endpoint's `EventsIn` sees them as its list of items: the route's OpenAPI schema is unchanged.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from assignment import fast_events
from assignment.routes.strict_json import StrictJSONRequest, StrictJSONRoute


class EventsRequest(StrictJSONRequest):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            events = fast_events.decode(await self.body())
            if events is None:
                return await super().json()
            self.state.typed_events = events
            self._json = {"events": events}
        return self._json


def typed_events(request: Request) -> list[fast_events.EventIn] | None:
    """The events `EventsRequest` decoded fast, or None (the body took the slow path)."""
    events: list[fast_events.EventIn] | None = getattr(request.state, "typed_events", None)
    return events


class EventsRoute(StrictJSONRoute):
    request_class = EventsRequest
