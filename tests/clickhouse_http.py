"""A ClickHouse server for the tests, where none can be installed (Debian's is 2018's, without
window functions): ClickHouse's HTTP interface — the query in the body or `query`, settings
and `default_format` as URL parameters, errors as HTTP 500 with `X-ClickHouse-Exception-Code`
— answered by ClickHouse itself, embedded (chdb), in a process of its own.  The client is the
real one (clickhouse-connect), speaking its usual protocol (Native format over HTTP).

    python -m tests.clickhouse_http PORT DATA_DIR
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from chdb import session

# URL parameters that are the HTTP interface's own, not settings of the query.
PROTOCOL = {"query", "default_format", "database", "session_id", "query_id", "compress",
            "wait_end_of_query", "client_protocol_version", "user", "password"}  # fmt: skip


def serve(port: int, directory: str) -> None:
    engine = session.Session(directory)  # type: ignore[no-untyped-call]
    turn = threading.Lock()  # one embedded engine: its queries take turns

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        def do_GET(self) -> None:
            self.answer(b"")

        def answer(self, body: bytes) -> None:
            params = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            query = (params.get("query", "") + "\n" + body.decode()).strip()
            fmt = params.get("default_format", "TabSeparated")
            settings = {k: v for k, v in params.items() if k not in PROTOCOL}
            try:
                with turn:
                    for name, value in settings.items():
                        if name == "max_execution_time":  # the one a look relies on
                            engine.query(f"SET max_execution_time = {float(value):g}")
                    result = engine.query(query, fmt)
                data, status = result.bytes(), 200
                headers = {"X-ClickHouse-Format": fmt,
                           "X-ClickHouse-Summary": json.dumps({"read_rows": "0"})}  # fmt: skip
            except Exception as exc:  # the engine's message, as a server sends it
                data, status = str(exc).encode(), 500
                headers = {"X-ClickHouse-Exception-Code": "1"}
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])
