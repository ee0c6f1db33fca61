"""A tiny model server for tests, benchmarks and the demo: answers every request with its name
and a prediction.

    python -m experiments.toy_model --port 9001 --name v1 [--delay-ms 0] [--error-rate 0]

`POST /admin/config {"delay_ms": 200, "error_rate": 0.02}` changes its latency and its share
of 500 answers while it runs, so a test can make a healthy candidate regress;
`{"stall_share": 0.05, "stall_ms": 120}` stalls that share of requests that long, as a busy
host does to every model on it.

Its prediction is a function of the request (method, path and body), as a model's is of its
input, so two toy models score a request and its mirrored copy alike: a score in [0, 1) and
the label `yes` at 0.5 or more.  `{"score_shift": 0.02, "flip_rate": 0.03}` makes it a
different model: scores moved (clipped to [0, 1)), a fixed share of requests' labels flipped.
`{"report_to": "http://abmesh:8000", "experiment": "e", "variant": "candidate", "token": "…"}`
makes it post its predictions to abmesh's `POST /v1/predictions` in batches, keyed by the
request's `x-request-id` (what a model needs to do for a shadow phase; a failed post is
dropped and counted in `GET /admin/stats`).  `{"record": true}` starts keeping, from then on,
each request's method, `x-request-id`, Host and `x-user-group`, which `GET /admin/recorded`
returns as a JSON list (the mirroring tests count what reached each model with it).

Standard library only.  Nagle is off and the listen backlog is large: without either, a Python
upstream behind Envoy adds ~40 ms a request or drops connections under load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import queue
import random
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BATCH = 500  # predictions per post at most
FLUSH_S = 0.2
RECORDED = ("x-request-id", "host", "x-user-group")


def predict(name: str, config: dict[str, Any], request: bytes) -> tuple[float, str]:
    """The score and label of a request: the same for every toy model unless configured not."""
    digest = hashlib.sha256(request).digest()
    base = int.from_bytes(digest[:8], "big") / 2**64
    score = min(max(base + float(config["score_shift"]), 0.0), 0.999999)
    label = "yes" if score >= 0.5 else "no"
    if int.from_bytes(digest[8:16], "big") / 2**64 < float(config["flip_rate"]):
        label = "no" if label == "yes" else "yes"
    return round(score, 6), label


class Reporter:
    """Posts predictions to abmesh in batches from its own thread: a request never waits."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.items: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.stats = {"posted": 0, "failed": 0}
        threading.Thread(target=self._run, daemon=True).start()

    def add(self, item: dict[str, Any]) -> None:
        if self.config.get("report_to"):
            self.items.put(item)

    def _run(self) -> None:
        while True:
            batch = [self.items.get()]
            deadline = time.monotonic() + FLUSH_S
            while len(batch) < BATCH and (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(self.items.get(timeout=left))
                except queue.Empty:
                    break
            self._post(batch)

    def _post(self, batch: list[dict[str, Any]]) -> None:
        c = self.config
        body = json.dumps({"experiment": c["experiment"], "predictions": batch}).encode()
        headers = {"content-type": "application/json"}
        if c.get("token"):
            headers["authorization"] = f"Bearer {c['token']}"
        request = urllib.request.Request(
            f"{c['report_to'].rstrip('/')}/v1/predictions", data=body, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                answer.read()
            self.stats["posted"] += len(batch)
        except OSError:
            self.stats["failed"] += len(batch)


def serve(port: int, name: str, delay_ms: float = 0.0, error_rate: float = 0.0) -> None:
    config: dict[str, Any] = {
        "delay_ms": delay_ms, "error_rate": error_rate, "stall_share": 0.0, "stall_ms": 0.0,
        "score_shift": 0.0, "flip_rate": 0.0,
    }  # fmt: skip
    reporter = Reporter(config)
    recorded: list[list[str]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _answer(self) -> None:
            start = time.perf_counter()
            length = int(self.headers.get("content-length") or 0)
            data = self.rfile.read(length) if length else b""
            answer: dict[str, Any] = {"model": name}
            if self.path == "/admin/config":
                config.update(json.loads(data))
                if config.get("record"):
                    recorded.clear()
            elif self.path == "/admin/stats":
                answer.update(reporter.stats)
            elif self.path == "/admin/recorded":
                answer["recorded"] = recorded
            else:
                if config.get("record"):
                    recorded.append([self.command, *(self.headers.get(h, "") for h in RECORDED)])
                stall = config["stall_ms"] if random.random() < config["stall_share"] else 0.0
                if config["delay_ms"] or stall:
                    time.sleep((config["delay_ms"] + stall) / 1000)
                request = f"{self.command} {self.path}\n".encode() + data
                answer["score"], answer["label"] = predict(name, config, request)
                request_id = self.headers.get("x-request-id")
                if request_id:
                    reporter.add({
                        "request_id": request_id, "variant": config.get("variant", name),
                        "score": answer["score"], "label": answer["label"],
                        "latency_ms": round((time.perf_counter() - start) * 1000, 3),
                    })  # fmt: skip
            failed = not self.path.startswith("/admin/") and random.random() < config["error_rate"]
            body = json.dumps(answer).encode()
            self.send_response(500 if failed else 200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.send_header("x-model", name)
            self.send_header("x-seen-group", self.headers.get("x-user-group", ""))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 1024
        daemon_threads = True

    Server(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    args = parser.parse_args()
    serve(args.port, args.name, args.delay_ms, args.error_rate)
