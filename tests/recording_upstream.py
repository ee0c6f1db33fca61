"""An upstream for mirroring tests that records what reached it:

    python -m tests.recording_upstream --port 9001 --name candidate

Answers every request with `{"model": NAME}` and keeps each request's method, `x-request-id`,
Host and `x-user-group`; `GET /recorded` (asked directly, not through Envoy) returns them as a
JSON list of [method, request id, host, group].  A separate process, so the test's client and
the upstreams do not share one interpreter's lock on 2 cores.  Nagle off and a large listen
backlog, as in experiments.toy_model.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEADERS = ("x-request-id", "host", "x-user-group")


def serve(port: int, name: str) -> None:
    body = json.dumps({"model": name}).encode()
    seen: list[list[str]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            if self.path == "/recorded":
                answer = json.dumps(seen).encode()
            else:
                seen.append([self.command, *(self.headers.get(h, "") for h in HEADERS)])
                answer = body
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

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
    args = parser.parse_args()
    serve(args.port, args.name)
