"""A tiny model server for tests and benchmarks: answers every request with its name.

    python -m experiments.toy_model --port 9001 --name v1 [--delay-ms 0] [--error-rate 0]

`POST /admin/config {"delay_ms": 200, "error_rate": 0.02}` changes its latency and its share
of 500 answers while it runs, so a test can make a healthy candidate regress;
`{"stall_share": 0.05, "stall_ms": 120}` stalls that share of requests that long, as a busy
host does to every model on it.

Standard library only.  Nagle is off and the listen backlog is large: without either, a Python
upstream behind Envoy adds ~40 ms a request or drops connections under load.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(port: int, name: str, delay_ms: float = 0.0, error_rate: float = 0.0) -> None:
    body = json.dumps({"model": name}).encode()
    config = {"delay_ms": delay_ms, "error_rate": error_rate, "stall_share": 0.0, "stall_ms": 0.0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            data = self.rfile.read(length) if length else b""
            if self.path == "/admin/config":
                config.update(json.loads(data))
            else:
                stall = config["stall_ms"] if random.random() < config["stall_share"] else 0.0
                if config["delay_ms"] or stall:
                    time.sleep((config["delay_ms"] + stall) / 1000)
            failed = self.path != "/admin/config" and random.random() < config["error_rate"]
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
