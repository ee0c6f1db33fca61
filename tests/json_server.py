"""A real HTTP server on a free loopback port, in a thread, that answers what the test sets:
for a path, a status, a body (JSON or raw text) and an optional delay.  It records every
request's path, query and headers.  Used as a JSON endpoint for the `web` provider and as a
small Prometheus query API (`prometheus_answer`) where a whole Prometheus is not the point."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # JSON-encoded unless a str
    delay_s: float = 0.0


@dataclass
class Seen:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class JsonServer:
    answers: dict[str, Answer] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    # Answers that depend on the request (a Prometheus query): tried before `answers`.
    answer_for: Callable[[Seen], Answer | None] | None = None

    def start(self) -> JsonServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                seen = Seen(parts.path, parse_qs(parts.query), dict(self.headers))
                owner.seen.append(seen)
                answer = owner.answer_for(seen) if owner.answer_for else None
                answer = answer or owner.answers.get(parts.path, Answer(404, {"error": "no"}))
                if answer.delay_s:
                    # A slow answer: waits for the delay, or until the test ends.
                    owner.released.wait(answer.delay_s)
                body = answer.body if isinstance(answer.body, str) else json.dumps(answer.body)
                data = body.encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (a timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def prometheus_answer(value: str | None) -> Answer:
    """An instant query's answer with one series of `value`, or an empty result."""
    result = [] if value is None else [{"metric": {}, "value": [time.time(), value]}]
    return Answer(body={"status": "success", "data": {"resultType": "vector", "result": result}})


class GrowingEnvoy:
    """A Prometheus query API over an Envoy whose clusters each serve `per_read` more requests
    at every read of their request counter, `errors` and `slow` (over 100 ms) shares of them:
    the counters a relative guardrail reads.  Other queries (rates, p99) answer `value`."""

    BOUNDS = ("25", "50", "100", "250", "500", "1000", "+Inf")

    def __init__(self, value: str = "0.0001", per_read: float = 1000.0) -> None:
        self.value, self.per_read = value, per_read
        self.errors: dict[str, float] = {}  # cluster -> share of requests that are 5xx
        self.slow: dict[str, float] = {}  # cluster -> share slower than 100 ms
        self.requests: dict[str, float] = {}

    def __call__(self, seen: Seen) -> Answer | None:
        query = seen.query.get("query", [""])[0]
        cluster = query.split('envoy_cluster_name="', 1)[-1].split('"', 1)[0]
        if "increase(" in query:
            return prometheus_answer(f"{self.per_read}")
        if "upstream_rq_total" in query and "rate(" not in query:
            self.requests[cluster] = self.requests.get(cluster, 0.0) + self.per_read
            return prometheus_answer(f"{self.requests[cluster]}")
        n = self.requests.get(cluster, 0.0)
        if "upstream_rq_xx" in query and "rate(" not in query:
            return prometheus_answer(f"{n * self.errors.get(cluster, 0.0)}")
        if "sum by (le)" in query and "rate(" not in query:
            fast = n * (1 - self.slow.get(cluster, 0.0))
            counts = [fast if float(b) <= 50 else fast if b == "100" else n for b in self.BOUNDS]
            result = [{"metric": {"le": b}, "value": [time.time(), f"{c}"]}
                      for b, c in zip(self.BOUNDS, counts, strict=True)]  # fmt: skip
            return Answer(body={"status": "success", "data": {"resultType": "vector",
                                                              "result": result}})  # fmt: skip
        return prometheus_answer(self.value)
