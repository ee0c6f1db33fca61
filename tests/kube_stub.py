"""A loopback stand-in for the part of the Kubernetes API the istio and gateway-api routers
use (no API server can run here): namespaced custom objects, GET and PATCH with JSON merge
patch (RFC 7386), `metadata.resourceVersion` checked on PATCH (409 on a mismatch), 404 for a
missing object, answers shaped as the API server's.  `conflicts = n` makes the next n PATCHes
meet a concurrent writer, as a real cluster can."""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip


class KubeStub:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.patches: list[dict[str, Any]] = []  # every PATCH body and its content type
        self.conflicts = 0
        self._lock = threading.Lock()
        self._version = 100
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                with stub._lock:
                    obj = stub.objects.get(self.path)
                if obj is None:
                    self._send(404, _status(404, "NotFound", f"{self.path} not found"))
                else:
                    self._send(200, obj)

            def do_PATCH(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                kind = self.headers.get("content-type", "")
                with stub._lock:
                    stub.patches.append({"content_type": kind, "body": body})
                    obj = stub.objects.get(self.path)
                    if obj is None:
                        return self._send(404, _status(404, "NotFound", f"{self.path} not found"))
                    if kind != "application/merge-patch+json":
                        return self._send(415, _status(415, "UnsupportedMediaType", kind))
                    if stub.conflicts > 0:  # another writer got there first
                        stub.conflicts -= 1
                        stub._bump(obj)
                    wanted = body.get("metadata", {}).get("resourceVersion")
                    if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
                        return self._send(
                            409, _status(409, "Conflict", "the object has been modified")
                        )
                    updated = merge_patch(obj, body)
                    stub._bump(updated)
                    stub.objects[self.path] = updated
                self._send(200, updated)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _bump(self, obj: dict[str, Any]) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)

    def put(self, group: str, version: str, plural: str, obj: dict[str, Any]) -> str:
        meta = obj["metadata"]
        path = f"/apis/{group}/{version}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"
        with self._lock:
            stored = copy.deepcopy(obj)
            self._bump(stored)
            self.objects[path] = stored
        return path

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
