"""What the rollout controller shows of itself: Prometheus metrics, /healthz and /readyz.

The controller is a loop, not a service, so a standard-library `ThreadingHTTPServer` in a daemon
thread serves the three paths: a scrape or a probe never waits for a tick, nor a tick for them.
Each `ControllerTelemetry` owns its registry, as the service's telemetry does: on the global one
a second controller in the same process (tests, the demo) would fail with "Duplicated
timeseries".

Liveness is a pure function of the last tick's time, so its boundaries are tested without a
clock; readiness is whatever the caller decides (say, "the first tick has run").
"""

from __future__ import annotations

import logging
import socketserver
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from experiments.store.credentials import redact

log = logging.getLogger("abmesh.controller.observability")

# A tick is one store round trip when idle, and Prometheus and router calls (with their
# timeouts) for every running experiment when busy: 1 ms .. 30 s.
TICK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
Check = Callable[[], tuple[bool, str]]
TEXT = "text/plain; charset=utf-8"


class ControllerTelemetry:
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._clock = clock  # wall time: the gauge is compared with time() in PromQL
        self._last_tick_at: float | None = None
        self._kinds: dict[str, str] = {}
        # The kind swap (remove the old series, set the new one) must not interleave with a
        # forget() from another thread, or an experiment could be left with two series.
        self._lock = threading.Lock()
        p = "abmesh_controller_"
        self._ticks = Counter(f"{p}ticks", "Ticks, by result (ok, error).", ["result"], registry=r)
        self._tick_seconds = Histogram(
            f"{p}tick_seconds", "Duration of a tick.", buckets=TICK_BUCKETS, registry=r
        )
        self._decisions = Counter(f"{p}decisions", "Decisions, by action.", ["action"], registry=r)
        self._router_errors = Counter(
            f"{p}router_errors", "Mesh router calls that failed.", ["router"], registry=r
        )
        self._leases = Gauge(f"{p}leases_held", "Leases this controller holds.", registry=r)
        self._phase = Gauge(
            f"{p}experiment_phase", "Index of the rollout phase each experiment is in.",
            ["experiment", "kind"], registry=r,
        )  # fmt: skip
        self._weight = Gauge(
            f"{p}candidate_weight", "Percent of the default route sent to the candidate.",
            ["experiment"], registry=r,
        )  # fmt: skip
        self._last_tick = Gauge(
            f"{p}last_tick_timestamp_seconds", "Unix time the last tick ended.", registry=r
        )

    @property
    def last_tick_at(self) -> float | None:
        """Wall time the last tick ended; None before the first."""
        return self._last_tick_at

    def tick_done(self, seconds: float, ok: bool) -> None:
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        self._ticks.labels("ok" if ok else "error").inc()
        self._tick_seconds.observe(seconds)
        # A failed tick still counts as a sign of life: the loop runs, and the error counter
        # (not a liveness restart) is what tells a failing store or Prometheus apart.
        self._last_tick_at = self._clock()
        self._last_tick.set(self._last_tick_at)

    def decision(self, action: str) -> None:
        self._decisions.labels(action).inc()

    def router_error(self, router: str) -> None:
        self._router_errors.labels(router).inc()

    def leases(self, held: int) -> None:
        if held < 0:
            raise ValueError(f"held must be >= 0, got {held}")
        self._leases.set(held)

    def experiment(self, name: str, phase_index: int, kind: str, candidate_weight: float) -> None:
        if phase_index < 0:
            raise ValueError(f"phase_index must be >= 0, got {phase_index}")
        if not 0 <= candidate_weight <= 100:
            raise ValueError(f"candidate_weight must be in [0, 100], got {candidate_weight}")
        with self._lock:
            previous = self._kinds.get(name)
            if previous is not None and previous != kind:
                # Otherwise the old kind's series keeps its last value forever and a query
                # by experiment sees the canary and the A/B phase at once.
                self._phase.remove(name, previous)
            self._kinds[name] = kind
            self._phase.labels(name, kind).set(phase_index)
            self._weight.labels(name).set(candidate_weight)

    def forget(self, name: str) -> None:
        """Drop a deleted experiment's series, so dashboards do not show it stuck forever."""
        with self._lock:
            kind = self._kinds.pop(name, None)
            if kind is not None:
                self._phase.remove(name, kind)
            self._weight.remove(name)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def liveness(
    last_tick_at: float | None, started_at: float, interval: float, now: float,
    *, grace: float = 3.0,
) -> tuple[bool, str]:  # fmt: skip
    """Alive while the last tick (before the first one: the start) is at most
    `grace × interval + 30` seconds old.  The 30 s leave room for one slow tick that waits out
    Prometheus and router timeouts; `grace` ticks in a row must be missed before a restart.
    All times on the same clock (time.time(), as `ControllerTelemetry.last_tick_at`)."""
    if interval <= 0 or grace <= 0:
        raise ValueError(f"interval and grace must be > 0, got {interval} and {grace}")
    limit = grace * interval + 30.0
    since = "last tick" if last_tick_at is not None else "no tick yet, started"
    # A clock stepped backwards makes the age negative: that is no sign of a hung loop.
    age = max(0.0, now - (last_tick_at if last_tick_at is not None else started_at))
    if age <= limit:
        return True, f"{since} {age:.1f} s ago (limit {limit:.1f} s)"
    return False, f"{since} {age:.1f} s ago > limit {limit:.1f} s = {grace:g} × {interval:g} + 30"


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung client must not keep the process alive or stop() waiting
    health: HealthServer

    def server_bind(self) -> None:
        # HTTPServer's own looks the host up with getfqdn(), a reverse DNS query that can hang
        # for seconds in a pod; the name is only used for CGI variables.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    timeout = 10  # seconds a client may take to send its request before the thread gives up

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _not_allowed(self) -> None:
        self._send(405, b"method not allowed\n", TEXT, True, Allow="GET, HEAD")

    # Without these BaseHTTPRequestHandler answers 501 (not implemented) instead of 405.
    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815

    def _answer(self, *, body: bool) -> None:
        health = cast(_Server, self.server).health
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._send(200, health.telemetry.exposition(), CONTENT_TYPE_LATEST, body)
            return
        check = {"/healthz": health.healthy, "/readyz": health.ready}.get(path)
        if check is None:
            self._send(404, b"not found\n", TEXT, body)
            return
        try:
            ok, message = check()
        except Exception as exc:  # a broken check is a failing check, not a dead server
            log.warning("%s check raised: %r", path, exc)
            ok, message = False, f"{type(exc).__name__}: {exc}"
        text = redact(message) if message else ("ok" if ok else "unavailable")
        self._send(200 if ok else 503, f"{text}\n".encode(), TEXT, body)

    def _send(self, status: int, payload: bytes, kind: str, body: bool, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a probe every few seconds would flood the controller's log


class HealthServer:
    """/metrics, /healthz and /readyz on their own port, in a daemon thread."""

    def __init__(
        self, telemetry: ControllerTelemetry, *, healthy: Check, ready: Check,
        host: str = "127.0.0.1", port: int = 0,
    ) -> None:  # fmt: skip
        self.telemetry, self.healthy, self.ready = telemetry, healthy, ready
        # Bound here, not in start(): a port in use fails at construction, and `port` is
        # known before the first request.
        self._server = _Server((host, port), _Handler)
        self._server.health = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{self.port}"

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("HealthServer already started")
        # A short poll interval: shutdown() waits for the loop to notice, up to this long.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="abmesh-controller-health", daemon=True,
        )  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
